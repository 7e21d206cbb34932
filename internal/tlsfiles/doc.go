// Package tlsfiles is TLS for gRPC from PEM files that may change on disk:
// a certificate, its key and a CA bundle (Certs), read again when they change,
// server credentials that verify client certificates on every handshake and
// re-check the chain on every call (ServerCreds), and client credentials
// that verify the server for the address dialled (ClientCreds).
//
// It is internal: programs reach it through client.TLS and
// grpcserver.TLS, which take file names.
package tlsfiles
