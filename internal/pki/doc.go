// Package pki makes certificate authorities and the certificates they sign,
// as PEM files, for service-to-service TLS: `make cluster`'s own CA for the
// instances (apart from Consul's), and the tests' CAs, good and bad
// certificates included (wrong usage, wrong name, short-lived, forged).
package pki
