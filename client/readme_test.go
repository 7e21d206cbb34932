package client_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMEGoBlocksAreExamples keeps the README's Go honest: every ```go
// block in README.md must be the body of an Example function (or a run of
// whole lines of one) in the module's _test.go files, or the whole of a
// program under examples/, which the compiler checks, so that a renamed
// function breaks the build or this test, not the reader.
func TestREADMEGoBlocksAreExamples(t *testing.T) {
	const root = ".."
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := goBlocks(string(readme))
	if len(blocks) == 0 {
		t.Fatal("no ```go block in README.md: has the fence changed?")
	}
	bodies := exampleBodies(t, root)
	programs := examplePrograms(t, filepath.Join(root, "examples"))
	for _, b := range blocks {
		if !containsBlock(bodies, b.text) && !programs[b.text] {
			t.Errorf("README.md:%d: this ```go block is not the body of any Example function in a _test.go file (%d found); put it in one (client/example_test.go) and copy its body here:\n%s",
				b.line, len(bodies), b.text)
		}
	}
}

type block struct {
	line int // of the opening fence, from 1
	text string
}

// goBlocks returns the ```go fenced blocks of markdown, dedented.
func goBlocks(markdown string) []block {
	var blocks []block
	var cur []string
	start := 0
	for i, line := range strings.Split(markdown, "\n") {
		fence := strings.TrimSpace(line)
		switch {
		case start == 0 && fence == "```go":
			start, cur = i+1, nil
		case start != 0 && fence == "```":
			blocks = append(blocks, block{start, dedent(strings.Join(cur, "\n"))})
			start = 0
		case start != 0:
			cur = append(cur, line)
		}
	}
	return blocks
}

// exampleBodies returns the bodies, dedented, of the Example functions in
// the _test.go files under root.
func exampleBodies(t *testing.T, root string) []string {
	t.Helper()
	var bodies []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "bin" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
		if err != nil {
			t.Logf("skipping %s: %v", path, err)
			return nil
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || fn.Body == nil || !strings.HasPrefix(fn.Name.Name, "Example") {
				continue
			}
			lbrace, rbrace := fset.Position(fn.Body.Lbrace).Offset, fset.Position(fn.Body.Rbrace).Offset
			bodies = append(bodies, dedent(string(src[lbrace+1:rbrace])))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bodies
}

// dedent trims the blank lines around s, the white space at the end of
// each line and the leading tabs its non-blank lines share.
func dedent(s string) string {
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	common := -1
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t\r")
		if lines[i] == "" {
			continue
		}
		if n := len(lines[i]) - len(strings.TrimLeft(lines[i], "\t")); common < 0 || n < common {
			common = n
		}
	}
	for i, l := range lines {
		if l != "" {
			lines[i] = l[common:]
		}
	}
	return strings.Trim(strings.Join(lines, "\n"), "\n")
}

// containsBlock says whether b, at some depth of tabs, is a run of whole
// lines of one of bodies.
func containsBlock(bodies []string, b string) bool {
	for _, body := range bodies {
		for indent := ""; len(indent) < 8; indent += "\t" {
			lines := strings.Split(b, "\n")
			for i, l := range lines {
				if l != "" {
					lines[i] = indent + l
				}
			}
			if strings.Contains("\n"+body+"\n", "\n"+strings.Join(lines, "\n")+"\n") {
				return true
			}
		}
	}
	return false
}

// examplePrograms returns the Go files of main packages under dir, whole
// and dedented.
func examplePrograms(t *testing.T, dir string) map[string]bool {
	t.Helper()
	programs := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(src), "\npackage main\n") {
			programs[dedent(string(src))] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return programs
}
