// Command vulndb builds a Go vulnerability database for govulncheck's
// -db file:///DIR flag, offline, from the OSV files of a pinned
// golang.org/x/vulndb module version that the go command downloads from the
// module proxy. vuln.go.dev, the database's usual host, cannot be reached here.
//
// The x/vulndb module carries every report as data/osv/<ID>.json, the same
// files its own generator (cmd/gendb) publishes; what the published database
// adds is the index and the modified/published times, which gendb takes from
// the git history that a module zip lacks. So this command copies the OSV files
// to DIR/ID/ and writes the v1 index (DIR/index/db.json, modules.json,
// vulns.json) as govulncheck's own in-memory index builds it
// (golang.org/x/vuln/internal/client/index.go). Entry times stay as the
// module has them (zero); the database's modified time is the module's commit
// time.
//
// It is idempotent: DIR/version holds the module version it was built from,
// and a DIR that already holds the pinned version is left alone. A new DIR is
// built beside the old one and renamed into place, so an interrupted build
// never leaves a half-written database.
//
// Usage: vulndb DIR
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/semver"
)

// The x/vulndb module version the database is built from, and its go.sum
// hash: moving to a newer database means changing both.
const (
	module        = "golang.org/x/vulndb"
	moduleVersion = "v0.0.0-20261105234957-e22db6528018"
	moduleSum     = "h1:mfngRv0Yoh0VApsXKEN82CjD99kl7mtparN3bs3JnqI="
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "vulndb: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: vulndb DIR")
	}
	dir, err := filepath.Abs(args[0])
	if err != nil {
		return err
	}
	if b, err := os.ReadFile(filepath.Join(dir, "version")); err == nil && strings.TrimSpace(string(b)) == moduleVersion {
		fmt.Fprintf(stdout, "vulndb: %s already holds %s@%s\n", dir, module, moduleVersion)
		return nil
	}

	src, modified, err := download()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	n, err := build(filepath.Join(src, "data", "osv"), tmp, modified)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "version"), []byte(moduleVersion+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "vulndb: built %s from %s@%s (%d entries)\n", dir, module, moduleVersion, n)
	return nil
}

// download fetches the pinned module into the module cache (the go command
// checks it against the checksum database) and returns its directory and
// commit time, after checking its hash against moduleSum.
func download() (dir string, modified time.Time, err error) {
	var stderr bytes.Buffer
	cmd := exec.Command("go", "mod", "download", "-json", module+"@"+moduleVersion)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var info struct{ Dir, Info, Sum, Error string }
	if jerr := json.Unmarshal(out, &info); jerr == nil && info.Error != "" {
		return "", time.Time{}, fmt.Errorf("go mod download: %s", info.Error)
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("go mod download %s@%s: %v: %s", module, moduleVersion, err, stderr.Bytes())
	}
	if info.Sum != moduleSum {
		return "", time.Time{}, fmt.Errorf("%s@%s: hash %s, want %s", module, moduleVersion, info.Sum, moduleSum)
	}
	b, err := os.ReadFile(info.Info)
	if err != nil {
		return "", time.Time{}, err
	}
	var v struct{ Time time.Time }
	if err := json.Unmarshal(b, &v); err != nil {
		return "", time.Time{}, fmt.Errorf("%s: %v", info.Info, err)
	}
	return info.Dir, v.Time, nil
}

// entry is the part of an OSV entry that the index needs.
type entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
	Affected []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
		Ranges []osvRange `json:"ranges,omitempty"`
	} `json:"affected"`
}

type osvRange struct {
	Type   string `json:"type"`
	Events []struct {
		Introduced string `json:"introduced,omitempty"`
		Fixed      string `json:"fixed,omitempty"`
	} `json:"events"`
}

// The v1 index files, as golang.org/x/vuln/internal/client/schema.go reads
// them.
type (
	dbMeta struct {
		Modified time.Time `json:"modified"`
	}
	moduleMeta struct {
		Path  string       `json:"path"`
		Vulns []moduleVuln `json:"vulns"`
	}
	moduleVuln struct {
		ID       string    `json:"id"`
		Modified time.Time `json:"modified"`
		Fixed    string    `json:"fixed,omitempty"`
	}
	vulnMeta struct {
		ID       string    `json:"id"`
		Modified time.Time `json:"modified"`
		Aliases  []string  `json:"aliases,omitempty"`
	}
)

// build writes the database for the OSV files in src into dst and returns
// the number of entries.
func build(src, dst string, modified time.Time) (int, error) {
	names, err := filepath.Glob(filepath.Join(src, "*.json"))
	if err != nil {
		return 0, err
	}
	if len(names) == 0 {
		return 0, fmt.Errorf("%s: no OSV files", src)
	}
	if err := os.MkdirAll(filepath.Join(dst, "ID"), 0o755); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Join(dst, "index"), 0o755); err != nil {
		return 0, err
	}
	modules := map[string]*moduleMeta{}
	var vulns []vulnMeta
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return 0, err
		}
		var e entry
		if err := json.Unmarshal(b, &e); err != nil {
			return 0, fmt.Errorf("%s: %v", name, err)
		}
		if filepath.Base(name) != e.ID+".json" {
			return 0, fmt.Errorf("%s: holds entry %q", name, e.ID)
		}
		if err := os.WriteFile(filepath.Join(dst, "ID", e.ID+".json"), b, 0o644); err != nil {
			return 0, err
		}
		vulns = append(vulns, vulnMeta{ID: e.ID, Modified: e.Modified, Aliases: e.Aliases})
		for _, a := range e.Affected {
			m := modules[a.Package.Name]
			if m == nil {
				m = &moduleMeta{Path: a.Package.Name, Vulns: []moduleVuln{}}
				modules[a.Package.Name] = m
			}
			m.Vulns = append(m.Vulns, moduleVuln{ID: e.ID, Modified: e.Modified, Fixed: nonSupersededFix(a.Ranges)})
		}
	}

	index := make([]*moduleMeta, 0, len(modules))
	for _, m := range modules {
		slices.SortStableFunc(m.Vulns, func(a, b moduleVuln) int { return strings.Compare(a.ID, b.ID) })
		index = append(index, m)
	}
	slices.SortFunc(index, func(a, b *moduleMeta) int { return strings.Compare(a.Path, b.Path) })
	slices.SortFunc(vulns, func(a, b vulnMeta) int { return strings.Compare(a.ID, b.ID) })
	for name, v := range map[string]any{"db.json": dbMeta{Modified: modified}, "modules.json": index, "vulns.json": vulns} {
		b, err := json.Marshal(v)
		if err != nil {
			return 0, err
		}
		if err := os.WriteFile(filepath.Join(dst, "index", name), b, 0o644); err != nil {
			return 0, err
		}
	}
	return len(names), nil
}

// nonSupersededFix returns the latest fixed version of the SEMVER ranges,
// or "" when the vulnerability was introduced again after it, as
// golang.org/x/vuln/internal/semver.NonSupersededFix does. govulncheck
// skips reading an entry whose fix is below the version in use.
func nonSupersededFix(ranges []osvRange) string {
	var latest string
	for _, r := range ranges {
		if r.Type != "SEMVER" {
			continue
		}
		for _, e := range r.Events {
			if e.Fixed != "" && less(latest, e.Fixed) {
				latest = e.Fixed
			}
		}
		for _, e := range r.Events {
			if e.Introduced != "" && e.Introduced != "0" && less(latest, e.Introduced) {
				latest = ""
				break
			}
		}
	}
	return latest
}

// less compares OSV versions, which have no "v" prefix.
func less(v, w string) bool {
	return semver.Compare(canonical(v), canonical(w)) < 0
}

func canonical(v string) string {
	return "v" + strings.TrimPrefix(strings.TrimPrefix(v, "v"), "go")
}
