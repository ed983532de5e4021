package sidecar

import (
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBuildInfoMetric(t *testing.T) {
	n := startNode(t, Config{Version: "v9.9.9-test"})
	r := do(t, http.MethodGet, n.URL()+"/metrics", nil, nil)
	require.Equal(t, http.StatusOK, r.Status)
	var line string
	for _, l := range strings.Split(string(r.Raw), "\n") {
		if strings.HasPrefix(l, "switchyard_build_info{") {
			line = l
		}
	}
	require.NotEmpty(t, line, "no switchyard_build_info on /metrics")
	b := ReadBuildInfo()
	revision := b.Revision
	if revision == "" {
		revision = "unknown"
	}
	assert.Contains(t, line, `version="v9.9.9-test"`)
	assert.Contains(t, line, `revision="`+revision+`"`)
	assert.Contains(t, line, `go_version="`+runtime.Version()+`"`)
	assert.True(t, strings.HasSuffix(line, "} 1"), line)
}
