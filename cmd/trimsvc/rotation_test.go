package main

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/pki"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/pb"
)

// trimsvc lives through the rotations of its ACL token, as operators,
// Vault Agent or Consul's auth methods do them (the new token written to
// the file, then the old one deleted), and through its token deleted with
// none to replace it: it never exits over a 403, says so on /metrics, and
// recovers once the file holds a valid token.
func TestTokenRotationNeverEndsTheInstance(t *testing.T) {
	s := testenv.SecureConsul(t)
	c := s.API()
	file := filepath.Join(t.TempDir(), "trimsvc.token")
	if err := pki.WriteFile(file, []byte(s.Tokens.Trimsvc+"\n")); err != nil {
		t.Fatal(err)
	}
	in := startInstance(t, s.URL(), append(s.ConsulTLSFlags(), "-consul-token-file", file, "-http-addr", "127.0.0.1:0",
		"-resync-interval", "200ms", "-load-report-interval", "200ms")...)
	s.WaitPassing("trimsvc", in.ID)
	conn, err := grpc.NewClient(in.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	serves := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := pb.NewTrimClient(conn).TrimSpace(ctx, &pb.TrimRequest{S: "a b"}); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, stderrOf(in))
		}
		select {
		case <-in.Exited():
			t.Fatalf("%s: trimsvc exited:\n%s", what, stderrOf(in))
		default:
		}
	}
	failing := func(registration, loadReport string) func() (bool, error) {
		return func() (bool, error) {
			_, metrics := get(t, "http://"+in.HTTPAddr+"/metrics")
			return strings.Contains(metrics, `trimsvc_consul_failing{loop="registration"} `+registration+"\n") &&
				strings.Contains(metrics, `trimsvc_consul_failing{loop="load_report"} `+loadReport+"\n"), nil
		}
	}
	eventually(t, 5*time.Second, "the failure metrics at 0", failing("0", "0"))

	// Rotation.
	secret, err := localconsul.RotateTokenFile(context.Background(), c, nil, file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.WaitLine("registered again with the new ACL token", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	serves("after the rotation")
	s.WaitPassing("trimsvc", in.ID)

	// The token deleted with no replacement.
	spare, _, err := localconsul.CloneToken(c, secret)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := c.ACL().TokenReadSelf(&api.QueryOptions{Token: secret})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ACL().TokenDelete(tok.AccessorID, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the failure on /metrics", failing("1", "1"))
	if _, err := in.WaitLine("cannot keep the registration", time.Second); err != nil {
		t.Errorf("no log line says the registration fails: %v", err)
	}
	serves("without a valid token")

	// A valid token in the file again.
	if err := pki.WriteFile(file, []byte(spare+"\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "recovered on /metrics", failing("0", "0"))
	serves("recovered")

	if err := in.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if want, have := 0, waitExit(t, in.Process, 15*time.Second); want != have {
		t.Errorf("exit code after SIGTERM: want %d, have %d:\n%s", want, have, stderrOf(in))
	}
	testenv.WaitPassing(t, c, "trimsvc", localconsul.Count(0))
	for _, tok := range []string{s.Tokens.Trimsvc, secret, spare} {
		if strings.Contains(stderrOf(in), tok) {
			t.Errorf("the logs show a token:\n%s", stderrOf(in))
		}
	}
}
