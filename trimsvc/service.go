package trimsvc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultMaxInputBytes is the input limit of a service built without an
// explicit one: 1 MiB.
const DefaultMaxInputBytes = 1 << 20

// Service trims text.
type Service interface {
	// TrimSpace returns s with every Unicode white-space character
	// (unicode.IsSpace) removed.
	TrimSpace(ctx context.Context, s string) (string, error)
}

// Errors a Service returns. Transports map them to status codes and back, so
// errors.Is works across the wire.
var (
	// ErrInputTooLarge means the input is longer than the service accepts.
	ErrInputTooLarge = errors.New("input too large")
	// ErrInvalidUTF8 means the input is not valid UTF-8 text.
	ErrInvalidUTF8 = errors.New("input is not valid UTF-8")
)

// LimitError is returned for input over the limit; it names the limit and
// unwraps to ErrInputTooLarge.
type LimitError struct {
	Size, Limit int
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("input of %d bytes exceeds the limit of %d bytes", e.Size, e.Limit)
}

// Unwrap lets errors.Is(err, ErrInputTooLarge) hold.
func (e *LimitError) Unwrap() error { return ErrInputTooLarge }

// New returns the basic Service. Inputs longer than maxInputBytes are
// rejected with a *LimitError; maxInputBytes must be positive.
func New(maxInputBytes int) (Service, error) {
	if maxInputBytes <= 0 {
		return nil, fmt.Errorf("max input bytes must be positive, got %d", maxInputBytes)
	}
	return basicService{maxInputBytes: maxInputBytes}, nil
}

type basicService struct {
	maxInputBytes int
}

func (s basicService) TrimSpace(_ context.Context, in string) (string, error) {
	if len(in) > s.maxInputBytes {
		return "", &LimitError{Size: len(in), Limit: s.maxInputBytes}
	}
	if !utf8.ValidString(in) {
		return "", ErrInvalidUTF8
	}
	return removeSpace(in), nil
}

// removeSpace drops every white-space rune. It returns in itself, without
// allocating, when there is nothing to drop.
func removeSpace(in string) string {
	i := strings.IndexFunc(in, unicode.IsSpace)
	if i < 0 {
		return in
	}
	var b strings.Builder
	b.Grow(len(in) - 1)
	b.WriteString(in[:i])
	for _, r := range in[i:] {
		if !unicode.IsSpace(r) {
			b.WriteRune(r)
		}
	}
	return b.String()
}
