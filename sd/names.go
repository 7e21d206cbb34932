package sd

import (
	"fmt"
	"strings"
)

// pathSafe refuses a name or ID that would need escaping in a URL path:
// the last guard before consul/api puts it in one.
func pathSafe(what, s string) error {
	if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/?#%\\ \t\r\n") {
		return fmt.Errorf("%s %q cannot be put in a Consul API path", what, s)
	}
	return nil
}
