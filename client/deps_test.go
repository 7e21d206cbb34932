package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsStayLean keeps what a program that imports client pays for:
// no Prometheus at all, and no go-cleanhttp or go-logfmt imported by
// trimkit's own packages. Those two still arrive underneath, by way of the
// chosen dependencies that need them (hashicorp/consul/api pools its
// connections with cleanhttp; go-kit's sd and log need go-kit/log, which
// formats with logfmt); the test pins exactly those paths, so that no
// other way in can appear unnoticed.
func TestImportsStayLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "github.com/trimkit/trimkit/client").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]map[string]bool{
		"github.com/hashicorp/go-cleanhttp": {"github.com/hashicorp/consul/api": true},
		"github.com/go-logfmt/logfmt":       {"github.com/go-kit/log": true},
	}
	banned := []string{"github.com/prometheus/", "github.com/hashicorp/go-cleanhttp", "github.com/go-logfmt/"}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		for _, b := range banned {
			if strings.HasPrefix(pkg, b) && allowed[pkg] == nil {
				t.Errorf("client depends on %s", pkg)
			}
		}
		for _, imp := range imports {
			if importers, ok := allowed[imp]; ok && !importers[pkg] {
				t.Errorf("%s imports %s", pkg, imp)
			}
		}
	}
	for _, b := range []string{"prometheus", "procfs"} {
		if strings.Contains(string(out), b) {
			t.Errorf("client's dependencies mention %s", b)
		}
	}
}

// TestGenericStack keeps client generic: what a program that imports it
// builds holds nothing of the trim service, its protobuf or its gRPC
// binding (DESIGN.md, "Packages").
func TestGenericStack(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/trimkit/trimkit/client").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"pb", "trimsvc", "transport"} {
			if p := "github.com/trimkit/trimkit/" + banned; dep == p || strings.HasPrefix(dep, p+"/") {
				t.Errorf("client depends on %s", dep)
			}
		}
	}
}
