package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files of the inject tests")

var goldenOpts = injectOptions{Image: "ghcr.io/switchyard-gw/switchyard:test", SecretName: "switchyard", GossipService: "switchyard-gossip"}

func TestInjectGolden(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "inject", "agents.yaml"))
	require.NoError(t, err)
	got, _, err := inject(bytes.NewReader(in), goldenOpts)
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
	assert.Contains(t, out, "terminationGracePeriodSeconds: 20", "the short grace period is raised above the preStop and the drain")
	assert.Contains(t, out, "- name: fetch-model", "existing init containers stay")
	assert.Contains(t, out, "# An agent Deployment", "comments stay")
}

func TestInjectIsIdempotent(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "inject", "agents.yaml"))
	require.NoError(t, err)
	once, _, err := inject(bytes.NewReader(in), goldenOpts)
	require.NoError(t, err)
	twice, _, err := inject(bytes.NewReader(once), goldenOpts)
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

	// A file given without -f would otherwise wait on stdin.
	stderr.Reset()
	assert.Equal(t, 2, run([]string{"inject", "agent.yaml"}, strings.NewReader(""), &bytes.Buffer{}, &stderr))
	assert.Contains(t, stderr.String(), "switchyard inject -f agent.yaml")

	// A Helm template is no manifest.
	stderr.Reset()
	stdout.Reset()
	helm := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ include \"agent.fullname\" . }}\nspec:\n  template:\n    spec:\n      containers: []\n"
	assert.Equal(t, 1, run([]string{"inject"}, strings.NewReader(helm), &stdout, &stderr))
	assert.Contains(t, stderr.String(), "line 4")
	assert.Contains(t, stderr.String(), "helm template")
	assert.Empty(t, stdout.String())

	// Go templates in values are no Helm template.
	stderr.Reset()
	stdout.Reset()
	alerts := "kind: ConfigMap\nmetadata: {name: am}\ndata:\n  t.tmpl: |\n    {{ define \"x\" }}{{ range .Alerts }}{{ $labels.instance }}{{ end }}{{ end }}\n---\n" +
		"kind: Deployment\nmetadata: {name: a}\nspec:\n  template:\n    spec:\n      containers: []\n"
	assert.Equal(t, 0, run([]string{"inject"}, strings.NewReader(alerts), &stdout, &stderr), stderr.String())
	assert.Contains(t, stdout.String(), "{{ range .Alerts }}")

	// A template that fools the line check still fails, saying why.
	stderr.Reset()
	assert.Equal(t, 1, run([]string{"inject"}, strings.NewReader("kind: Deployment\n{{- if $x }}\nmetadata: {}\n{{- end }}\n"), &bytes.Buffer{}, &stderr))
	assert.Contains(t, stderr.String(), "helm template")

	// Nothing to inject is an error, not a silent copy.
	stderr.Reset()
	assert.Equal(t, 1, run([]string{"inject"}, strings.NewReader("kind: Service\nmetadata: {name: s}\n"), &bytes.Buffer{}, &stderr))
	assert.Contains(t, stderr.String(), "no workload")
	assert.Equal(t, 1, run([]string{"inject"}, strings.NewReader("kind: Deployment\nspec: {}\n"), &bytes.Buffer{}, &stderr),
		"a workload without a pod template is an error")
	assert.Contains(t, stderr.String(), "spec.template")
}

// podSpecs decodes inject's output and returns each pod spec by the name of
// its workload.
func podSpecs(t *testing.T, out []byte) map[string]map[string]any {
	t.Helper()
	specs := map[string]map[string]any{}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
		name, _ := dig(doc, "metadata", "name").(string)
		var tmpl any
		switch doc["kind"] {
		case "Pod":
			tmpl = doc
		case "CronJob":
			tmpl = dig(doc, "spec", "jobTemplate", "spec", "template")
		default:
			tmpl = dig(doc, "spec", "template")
		}
		if spec, ok := dig(tmpl, "spec").(map[string]any); ok {
			specs[name] = spec
		}
	}
	return specs
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func containerNamed(list any, name string) map[string]any {
	l, _ := list.([]any)
	for _, c := range l {
		if m, ok := c.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	return nil
}

func envOf(c map[string]any) map[string]any {
	env := map[string]any{}
	l, _ := c["env"].([]any)
	for _, e := range l {
		m := e.(map[string]any)
		if v, ok := m["value"]; ok {
			env[m["name"].(string)] = v
		} else {
			env[m["name"].(string)] = m["valueFrom"]
		}
	}
	return env
}

// TestInjectRightOnFirstApply: the agent waits for its sidecar, knows where
// it is and has its key; the drain fits in the grace period; Go knows the
// memory limit.
func TestInjectRightOnFirstApply(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "inject", "agents.yaml"))
	require.NoError(t, err)
	out, _, err := inject(bytes.NewReader(in), goldenOpts)
	require.NoError(t, err)
	specs := podSpecs(t, out)
	for _, name := range []string{"agent", "planner"} {
		spec := specs[name]
		require.NotNil(t, spec, name)
		sc := containerNamed(spec["initContainers"], "switchyard")
		require.NotNil(t, sc, name)

		// The startup probe holds the agent containers until the sidecar serves.
		assert.Equal(t, "/healthz", dig(sc, "startupProbe", "httpGet", "path"), name)
		assert.Equal(t, 8787, dig(sc, "startupProbe", "httpGet", "port"), name)

		// preStop + drain + margin fit in the grace period.
		env := envOf(sc)
		drain, err := time.ParseDuration(env["SWITCHYARD_DRAIN_TIMEOUT"].(string))
		require.NoError(t, err, name)
		preStop := time.Duration(dig(sc, "lifecycle", "preStop", "sleep", "seconds").(int)) * time.Second
		grace := 30 * time.Second
		if g, ok := spec["terminationGracePeriodSeconds"].(int); ok {
			grace = time.Duration(g) * time.Second
		}
		assert.GreaterOrEqual(t, grace, preStop+drain+5*time.Second, "%s: grace %v, preStop %v, drain %v", name, grace, preStop, drain)

		// GOMEMLIMIT is 90% of the memory limit.
		assert.Equal(t, "512Mi", dig(sc, "resources", "limits", "memory"), name)
		assert.Equal(t, "460MiB", env["GOMEMLIMIT"], name)

		// Every agent container finds its sidecar and has a key.
		containers := spec["containers"].([]any)
		require.NotEmpty(t, containers)
		for _, c := range containers {
			agentEnv := envOf(c.(map[string]any))
			assert.Equal(t, "http://127.0.0.1:8787", agentEnv["SWITCHYARD_URL"], name)
			assert.Equal(t, map[string]any{"name": "switchyard", "key": "api-keys"}, dig(agentEnv["SWITCHYARD_API_KEY"], "secretKeyRef"), name)
		}
	}
}

func TestInjectKeepsTheAgentsOwnSettings(t *testing.T) {
	in := `kind: Deployment
metadata: {name: a}
spec:
  template:
    spec:
      containers:
        - name: a
          env:
            - {name: SWITCHYARD_URL, value: "http://elsewhere:8787"}
            - {name: SWITCHYARD_API_KEY, value: "k"}
`
	out, _, err := inject(strings.NewReader(in), goldenOpts)
	require.NoError(t, err)
	env := envOf(containerNamed(podSpecs(t, out)["a"]["containers"], "a"))
	assert.Equal(t, "http://elsewhere:8787", env["SWITCHYARD_URL"])
	assert.Equal(t, "k", env["SWITCHYARD_API_KEY"])
	assert.Equal(t, 2, strings.Count(string(out), "SWITCHYARD_URL,")+strings.Count(string(out), "SWITCHYARD_API_KEY,"), "nothing added twice")
}

// TestInjectJobsCronJobsPods: they are agent workloads too; a native
// sidecar does not keep a Job from completing.
func TestInjectJobsCronJobsPods(t *testing.T) {
	in := `apiVersion: batch/v1
kind: Job
metadata: {name: job}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: a, image: a}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: cron}
spec:
  schedule: "@hourly"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: a, image: a}]
---
apiVersion: v1
kind: Pod
metadata: {name: pod}
spec:
  containers: [{name: a, image: a}]
---
apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: ReplicaSet
    metadata: {name: rs}
    spec:
      template:
        spec:
          containers: [{name: a, image: a}]
`
	out, _, err := inject(strings.NewReader(in), goldenOpts)
	require.NoError(t, err)
	specs := podSpecs(t, out)
	for _, name := range []string{"job", "cron", "pod"} {
		require.NotNil(t, specs[name], name)
		assert.NotNil(t, containerNamed(specs[name]["initContainers"], "switchyard"), name)
		assert.Contains(t, envOf(containerNamed(specs[name]["containers"], "a")), "SWITCHYARD_URL", name)
	}
	assert.Equal(t, 4, strings.Count(string(out), "- name: switchyard\n"), "the List's ReplicaSet too")
	assert.Equal(t, 4, strings.Count(string(out), injectedLabel), "each pod gets the label")

	twice, _, err := inject(bytes.NewReader(out), goldenOpts)
	require.NoError(t, err)
	assert.Equal(t, string(out), string(twice))
}

// TestInjectWarnsOfClosedPorts: the NetworkPolicy selects the agent's pods;
// inject names the declared ports it closes.
func TestInjectWarnsOfClosedPorts(t *testing.T) {
	in := `kind: Deployment
metadata: {name: web-agent}
spec:
  template:
    spec:
      containers:
        - name: agent
          ports:
            - {name: http, containerPort: 8080}
            - {containerPort: 9090, protocol: UDP}
---
kind: Deployment
metadata: {name: quiet}
spec:
  template:
    spec:
      containers: [{name: agent}]
`
	_, warnings, err := inject(strings.NewReader(in), goldenOpts)
	require.NoError(t, err)
	require.Len(t, warnings, 1, "only the workload with ports")
	assert.Contains(t, warnings[0], "Deployment/web-agent")
	assert.Contains(t, warnings[0], "8080/TCP (agent http)")
	assert.Contains(t, warnings[0], "9090/UDP (agent)")

	var stderr bytes.Buffer
	require.Equal(t, 0, run([]string{"inject"}, strings.NewReader(in), &bytes.Buffer{}, &stderr))
	assert.Contains(t, stderr.String(), "WARNING")
	assert.Contains(t, stderr.String(), "8080/TCP")
}

// TestInjectDefaultImage: the image make image built for this binary; a
// plain go build names the release, which the manifests name too.
func TestInjectDefaultImage(t *testing.T) {
	saved := version
	t.Cleanup(func() { version = saved })
	version = ""
	assert.Equal(t, "ghcr.io/switchyard-gw/switchyard:"+release, defaultImage())
	version = "dev"
	assert.Equal(t, "ghcr.io/switchyard-gw/switchyard:"+release, defaultImage(), "the Dockerfile's placeholder is no image")
	version = "0.2.0-rc.1"
	assert.Equal(t, "ghcr.io/switchyard-gw/switchyard:0.2.0-rc.1", defaultImage())
}
