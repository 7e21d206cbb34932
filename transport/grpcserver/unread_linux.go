package grpcserver

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unread reports whether c has bytes received and not yet read: a
// connection the server is blocked reading, whose caller has answered,
// is not waiting for its caller but for the server.
func unread(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	if err := raw.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }); err != nil {
		return false
	}
	return n > 0
}
