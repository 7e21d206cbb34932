// Package cli holds what trimkit's commands share about flags: parsing with
// ff (flags, then environment variables with a prefix), a --help that names
// every flag's environment variable and its one default, and errors that
// fit on a line: a bad flag or variable is named with its value, once,
// followed by a pointer to --help, and the command exits 2 (Exit; under
// `go run`, 1, which the help says: GoRunNote).
package cli
