package client

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A TLS-only instance closes a plaintext connection before HTTP/2 starts;
// depending on whether the close races the client's first write, gRPC
// reports EOF or a connection reset. Both get the hint; other
// Unavailable errors do not.
func TestPlaintextHint(t *testing.T) {
	for _, tc := range []struct {
		err  error
		hint bool
	}{
		{status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: EOF"`), true},
		{status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: connection reset by peer"`), true},
		{status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer"`), true},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:2: connect: connection refused"`), false},
		{status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: http2: frame too large"`), false},
		{status.Error(codes.Internal, `error reading server preface: EOF`), false},
	} {
		e := plaintextHint(func(context.Context, interface{}) (interface{}, error) { return nil, tc.err })
		_, err := e(context.Background(), nil)
		hinted := strings.Contains(err.Error(), "does it require TLS?")
		if hinted != tc.hint {
			t.Errorf("%v: hint %v, want %v", tc.err, hinted, tc.hint)
		}
		if !errors.Is(err, tc.err) || status.Code(err) != status.Code(tc.err) {
			t.Errorf("%v: hinted error %v lost the original or its code", tc.err, err)
		}
	}
}

// An instance that refuses the client's certificate in the TLS handshake
// sends an alert, which gRPC reports as an unreadable server preface (TLS
// 1.3) or a failed handshake (TLS 1.2); either gets the hint, which says
// whether the client presents a certificate.
func TestRefusedHint(t *testing.T) {
	for _, tc := range []struct {
		err      error
		certFile string
		want     string // in the hint; "" for no hint
	}{
		{status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: remote error: tls: certificate required"`), "",
			"(certificate required): it requires a client certificate (mutual TLS) signed by its client CA, within its validity dates, listing the client-auth usage; this client presents none"},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: remote error: tls: unknown certificate authority"`), "/etc/me.pem",
			"(unknown certificate authority): it requires a client certificate (mutual TLS) signed by its client CA, within its validity dates, listing the client-auth usage; this client presents /etc/me.pem"},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"`), "", ""},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:2: connect: connection refused"`), "", ""},
	} {
		e := refusedHint(func(context.Context, interface{}) (interface{}, error) { return nil, tc.err }, tc.certFile)
		_, err := e(context.Background(), nil)
		if tc.want == "" {
			if err != tc.err {
				t.Errorf("%v: hinted as %v", tc.err, err)
			}
			continue
		}
		if !strings.Contains(err.Error(), "the instance refused this client in the TLS handshake "+tc.want) {
			t.Errorf("%v: hint %q, want %q", tc.err, err, tc.want)
		}
		if !errors.Is(err, tc.err) || status.Code(err) != codes.Unavailable {
			t.Errorf("%v: hinted error %v lost the original or its code", tc.err, err)
		}
	}
}
