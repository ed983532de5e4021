package main

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDebugListenerServesProfilesUntilStopped(t *testing.T) {
	url, stop, err := serveDebug("127.0.0.1:0", discardLogger())
	require.NoError(t, err)

	resp, err := http.Get(url + "goroutine?debug=1")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), "goroutine profile")

	stop()
	http.DefaultClient.CloseIdleConnections()
	_, err = http.Get(url)
	require.Error(t, err, "the listener is closed after stop")

	_, _, err = serveDebug("not an address", discardLogger())
	require.ErrorContains(t, err, "--debug-listen")
}
