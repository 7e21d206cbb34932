package trimsvc

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestTrimSpace(t *testing.T) {
	const limit = 16
	svc, err := New(limit)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, in, want string
		err            error
	}{
		{name: "ascii spaces", in: "  a b  c ", want: "abc"},
		{name: "tabs and newlines", in: "a\tb\nc\r\nd\v\fe", want: "abcde"},
		{name: "no-break space", in: "a\u00a0b", want: "ab"},
		{name: "ideographic space", in: "日\u3000本", want: "日本"},
		{name: "line and paragraph separators", in: "\u0085x\u2028y\u2029z", want: "xyz"},
		{name: "ogham and em spaces", in: "\u1680x\u2003", want: "x"},
		{name: "empty", in: "", want: ""},
		{name: "only spaces", in: " \t\n\u3000", want: ""},
		{name: "nothing to trim", in: "abc", want: "abc"},
		{name: "zero-width space is not white space", in: "a\u200bb", want: "a\u200bb"},
		{name: "exactly at limit", in: strings.Repeat("x", limit-2) + "  ", want: strings.Repeat("x", limit-2)},
		{name: "one byte over limit", in: strings.Repeat("x", limit+1), err: ErrInputTooLarge},
		{name: "invalid utf-8", in: "a\xffb", err: ErrInvalidUTF8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			have, err := svc.TrimSpace(context.Background(), tc.in)
			if want, have := tc.err, err; !errors.Is(have, want) {
				t.Fatalf("error: want %v, have %v", want, have)
			}
			if want := tc.want; want != have {
				t.Errorf("want %q, have %q", want, have)
			}
		})
	}
}

func TestLimitErrorNamesLimit(t *testing.T) {
	svc, err := New(10)
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.TrimSpace(context.Background(), strings.Repeat("x", 11))
	var limit *LimitError
	if !errors.As(err, &limit) {
		t.Fatalf("want *LimitError, have %T %v", err, err)
	}
	if want, have := (LimitError{Size: 11, Limit: 10}), *limit; want != have {
		t.Errorf("want %+v, have %+v", want, have)
	}
	if want, have := "input of 11 bytes exceeds the limit of 10 bytes", err.Error(); want != have {
		t.Errorf("want %q, have %q", want, have)
	}
}

func TestNewRejectsBadLimit(t *testing.T) {
	for _, limit := range []int{0, -1} {
		if _, err := New(limit); err == nil {
			t.Errorf("New(%d): want error, have nil", limit)
		}
	}
}

func FuzzTrimSpace(f *testing.F) {
	for _, seed := range []string{"", " ", "a b", "\u00a0\u3000x", "a\xffb", "\t\n\v\f\r", strings.Repeat(" x", 40)} {
		f.Add(seed)
	}
	svc, err := New(64)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := svc.TrimSpace(context.Background(), in)
		switch {
		case len(in) > 64:
			if !errors.Is(err, ErrInputTooLarge) {
				t.Fatalf("%d bytes: want ErrInputTooLarge, have %v", len(in), err)
			}
			return
		case !utf8.ValidString(in):
			if !errors.Is(err, ErrInvalidUTF8) {
				t.Fatalf("%q: want ErrInvalidUTF8, have %v", in, err)
			}
			return
		case err != nil:
			t.Fatalf("%q: unexpected error %v", in, err)
		}
		if i := strings.IndexFunc(out, unicode.IsSpace); i >= 0 {
			t.Errorf("%q -> %q: white space left at byte %d", in, out, i)
		}
		if len(out) > len(in) {
			t.Errorf("%q -> %q: output longer than input", in, out)
		}
		if want, have := strings.Join(strings.FieldsFunc(in, unicode.IsSpace), ""), out; want != have {
			t.Errorf("%q: want %q, have %q", in, want, have)
		}
	})
}
