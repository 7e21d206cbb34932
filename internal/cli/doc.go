// Package cli holds what trimkit's commands share about flags: parsing with
// ff (flags, then environment variables with a prefix) and a --help that
// names every flag's environment variable and default.
package cli
