package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files of the inject tests")

var goldenOpts = injectOptions{Image: "ghcr.io/switchyard-gw/switchyard:test", SecretName: "switchyard", GossipService: "switchyard-gossip"}

func TestInjectGolden(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "inject", "agents.yaml"))
	require.NoError(t, err)
	got, err := inject(bytes.NewReader(in), goldenOpts)
	require.NoError(t, err)
	golden := filepath.Join("testdata", "inject", "agents.golden.yaml")
	if *updateGolden {
		require.NoError(t, os.WriteFile(golden, got, 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got), "run go test ./cmd/switchyard -run InjectGolden -update to accept a change")

	out := string(got)
	assert.Equal(t, 2, strings.Count(out, "- name: switchyard\n"), "one sidecar per workload, none on the Service")
	assert.Equal(t, 2, strings.Count(out, "restartPolicy: Always"), "a native sidecar")
	assert.Contains(t, out, "terminationGracePeriodSeconds: 15", "the short grace period is raised above the drain")
	assert.Contains(t, out, "- name: fetch-model", "existing init containers stay")
	assert.Contains(t, out, "# An agent Deployment", "comments stay")
}

func TestInjectIsIdempotent(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "inject", "agents.yaml"))
	require.NoError(t, err)
	once, err := inject(bytes.NewReader(in), goldenOpts)
	require.NoError(t, err)
	twice, err := inject(bytes.NewReader(once), goldenOpts)
	require.NoError(t, err)
	assert.Equal(t, string(once), string(twice))
}

func TestInjectCommand(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.yaml")
	var stderr bytes.Buffer
	code := run([]string{"inject", "-f", filepath.Join("testdata", "inject", "agents.yaml"), "-o", out, "--image", "img:1"}, nil, &bytes.Buffer{}, &stderr)
	require.Equal(t, 0, code, stderr.String())
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Contains(t, string(b), "image: img:1")

	var stdout bytes.Buffer
	require.Equal(t, 0, run([]string{"inject"}, strings.NewReader("kind: Deployment\nspec:\n  template:\n    spec:\n      containers: []\n"), &stdout, &stderr))
	assert.Contains(t, stdout.String(), "name: switchyard")

	assert.Equal(t, 1, run([]string{"inject", "-f", filepath.Join(dir, "missing.yaml")}, nil, &bytes.Buffer{}, &stderr))
	assert.Equal(t, 1, run([]string{"inject"}, strings.NewReader("kind: Deployment\nspec: {}\n"), &bytes.Buffer{}, &stderr),
		"a workload without a pod template is an error")
	assert.Contains(t, stderr.String(), "spec.template")
}
