package wire

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEventAppendJSON(t *testing.T) {
	for name, ev := range map[string]Event{
		"required only": {SenderID: "a", SenderType: "ai", EventType: "message"},
		"every field": {SenderID: "a", SenderType: "human", EventType: "message", Message: "<b>&</b> \u2028 \"q\" \n",
			SessionID: "s", SenderGatewayURL: "https://gw.example/x", RecipientID: "r", EventID: "e",
			Metadata: map[string]json.RawMessage{"z": json.RawMessage(`{ "b" : [1, 2] }`), "a": json.RawMessage(`"<x>"`)}},
		"empty metadata":     {SenderID: "a", SenderType: "ai", EventType: "m", Metadata: map[string]json.RawMessage{}},
		"nil metadata value": {SenderID: "a", SenderType: "ai", EventType: "m", Metadata: map[string]json.RawMessage{"k": nil, "": json.RawMessage(` 1 `)}},
	} {
		t.Run(name, func(t *testing.T) {
			want, err := json.Marshal(ev)
			require.NoError(t, err)
			got, err := ev.AppendJSON([]byte("prefix"))
			require.NoError(t, err)
			require.Equal(t, "prefix"+string(want), string(got))
		})
	}
	bad := Event{SenderID: "a", SenderType: "ai", EventType: "m", Metadata: map[string]json.RawMessage{"k": json.RawMessage(`{`)}}
	_, err := bad.AppendJSON(nil)
	require.Error(t, err, "metadata that is not JSON fails, as json.Marshal does")
}
