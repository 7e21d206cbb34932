// Package tlsfiles is TLS for gRPC from PEM files that may change on disk:
// a certificate, its key and a CA bundle (Certs), read again when they change,
// server credentials that verify client certificates on every handshake and
// re-check the chain on every call (ServerCreds), and client credentials
// that verify the server for the address dialled (ClientCreds, or
// ClientTLS for any TLS client, such as the Consul API's). Stamp is how
// they notice a change, for other files too (sd's ACL token file).
//
// It is internal: programs reach it through client.TLS,
// grpcserver.TLS and sd.ConsulConfig, which take file names.
package tlsfiles
