package testkit

import (
	"errors"
	"net"
	"net/http"
	"syscall"
	"testing"
)

// SmallBufferClient is an HTTP client whose TCP connections have a receive
// buffer of about size bytes, so that a client that stops reading backs up
// its server's writes after kilobytes instead of megabytes of kernel
// buffering. Its idle connections are closed when the test ends.
func SmallBufferClient(t testing.TB, size int) *http.Client {
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
		})
		return errors.Join(err, serr)
	}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
