package sd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/trimkit/trimkit/internal/tlsfiles"
)

// tokenHeader is the header Consul's HTTP API takes the ACL token in.
const tokenHeader = "X-Consul-Token"

// tokenFile is an ACL token read from a file, read again when the file
// changes (a stat per request, see tlsfiles.Stamp) and, whatever its
// stamp says, when Consul refuses the token: a rotation (the new token
// written to the file, then the old one deleted) needs no restart.
type tokenFile struct {
	path string // immutable

	// mu guards token and stamp: every request reads them, and may read
	// the file again.
	mu    sync.Mutex
	token string // "" for none: the anonymous token
	stamp string // the file's Stamp when token was read
}

// newTokenFile reads path; it must be readable.
func newTokenFile(path string) (*tokenFile, error) {
	f := &tokenFile{path: path}
	stamp := tlsfiles.Stamp(path)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("consul token file: %w", err)
	}
	f.token, f.stamp = strings.TrimSpace(string(b)), stamp
	return f, nil
}

// current returns the token, reading the file again first if it changed.
func (f *tokenFile) current() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if stamp := tlsfiles.Stamp(f.path); stamp != f.stamp {
		f.readLocked(stamp)
	}
	return f.token
}

// reread reads the file again now and returns the token.
func (f *tokenFile) reread() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readLocked(tlsfiles.Stamp(f.path))
	return f.token
}

// readLocked reads the file, whose stamp is stamp; f.mu is held. A file
// that cannot be read, or reads empty (half written, or between a
// truncation and a write), keeps the token read last; its stamp is kept
// all the same, so that the write that completes it is noticed.
func (f *tokenFile) readLocked(stamp string) {
	f.stamp = stamp
	b, err := os.ReadFile(f.path)
	if token := strings.TrimSpace(string(b)); err == nil && token != "" {
		f.token = token
	}
}

// tokenTransport sends each request with the token of file, as it is when
// the request goes out. On a 403 it reads the file again, and if the token
// changed meanwhile it sends the request once more with the new one: a
// 403 is judged only against the token of the moment.
type tokenTransport struct {
	next http.RoundTripper
	file *tokenFile
}

func (t *tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	token := t.file.current()
	resp, err := t.send(req, req.Body, token)
	if err != nil || resp.StatusCode != http.StatusForbidden {
		return resp, err
	}
	fresh := t.file.reread()
	if fresh == token {
		return resp, nil
	}
	body := req.Body
	if body != nil && body != http.NoBody {
		if req.GetBody == nil {
			return resp, nil // cannot be sent again
		}
		if body, err = req.GetBody(); err != nil {
			return resp, nil
		}
	}
	// The 403 is dropped for the answer to the new token: drain it so
	// that its connection can be used again.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return t.send(req, body, fresh)
}

// send sends a copy of req with body and token (RoundTrip must not
// change req), and records the token in a tokenUsed of req's context.
func (t *tokenTransport) send(req *http.Request, body io.ReadCloser, token string) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Body = body
	if token == "" {
		r.Header.Del(tokenHeader)
	} else {
		r.Header.Set(tokenHeader, token)
	}
	if used, ok := req.Context().Value(tokenUsedKey{}).(*tokenUsed); ok {
		used.set(token)
	}
	return t.next.RoundTrip(r)
}

// CloseIdleConnections closes the idle connections of the transport
// underneath, as http.Client.CloseIdleConnections asks of it.
func (t *tokenTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// tokenUsed records which token the requests made with a context went out
// with, as a fingerprint (never the secret): a Registrar compares it with
// the one its registration was made with, to register again after a
// rotation. The agent syncs a service and its checks to the catalog with
// the token they were registered with; once that token is deleted, a
// check's change of status would never reach the catalog.
type tokenUsed struct {
	mu          sync.Mutex
	fingerprint string // "" until a request records one
}

type tokenUsedKey struct{}

// withTokenUsed returns ctx carrying a new tokenUsed. Only requests sent
// through a tokenTransport record a token; with a fixed token, or a fake
// Client, it stays "".
func withTokenUsed(ctx context.Context) (context.Context, *tokenUsed) {
	u := &tokenUsed{}
	return context.WithValue(ctx, tokenUsedKey{}, u), u
}

func (u *tokenUsed) set(token string) {
	sum := sha256.Sum256([]byte(token))
	u.mu.Lock()
	defer u.mu.Unlock()
	u.fingerprint = hex.EncodeToString(sum[:8])
}

// get returns the fingerprint of the token the last request went out
// with, "" if none recorded one.
func (u *tokenUsed) get() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.fingerprint
}
