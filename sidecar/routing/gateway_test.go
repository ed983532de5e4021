package routing

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSubmitResultAppendJSON(t *testing.T) {
	for _, r := range []SubmitResult{
		{Status: "ok", EventID: "evt_x", Recipients: 3, deliveryCounts: deliveryCounts{Live: 1, Queued: 1, Duplicates: 1}},
		{Status: "ok", EventID: "<&>\u2028"},
	} {
		want, err := json.Marshal(r)
		require.NoError(t, err)
		require.Equal(t, string(want), string(r.AppendJSON(nil)))
	}
}
