package wsread

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
)

func TestMessageReadsWholeMessagesIntoTheReusedBuffer(t *testing.T) {
	msgs := [][]byte{[]byte("a"), bytes.Repeat([]byte("x"), 100_000), []byte("last")}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for _, m := range msgs {
			if c.Write(r.Context(), websocket.MessageText, m) != nil {
				return
			}
		}
		_ = c.Close(websocket.StatusNormalClosure, "done")
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	require.NoError(t, err)
	defer c.CloseNow()
	c.SetReadLimit(-1)

	buf := make([]byte, 0, 16)
	for i, want := range msgs {
		buf, err = Message(c, buf)
		require.NoError(t, err, "message %d", i)
		require.Equal(t, want, buf, "message %d", i)
	}
	require.GreaterOrEqual(t, cap(buf), 100_000, "the buffer grew to the largest message and is kept")
	_, err = Message(c, buf)
	require.Equal(t, websocket.StatusNormalClosure, websocket.CloseStatus(err))
}
