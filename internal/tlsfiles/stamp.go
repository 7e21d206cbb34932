package tlsfiles

import (
	"fmt"
	"os"
	"strings"
)

// Stamp sums up files' sizes and modification times, and whether each
// exists: two stamps of the same files differ when one of them was
// written, replaced (a rename over it), removed or created in between.
// Empty names are skipped. It is a stat per file, cheap enough for every
// request; a rewrite that keeps the size within the file system's
// timestamp granularity goes unseen, so a reader that is refused should
// read its files again all the same.
func Stamp(files ...string) string {
	var b strings.Builder
	for _, f := range files {
		if f == "" {
			continue
		}
		info, err := os.Stat(f)
		if err != nil {
			b.WriteString("-;")
			continue
		}
		fmt.Fprintf(&b, "%d %d;", info.Size(), info.ModTime().UnixNano())
	}
	return b.String()
}
