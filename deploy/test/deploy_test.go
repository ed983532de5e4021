package deploytest

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func TestKustomizeBase(t *testing.T) {
	objs := renderKustomize(t)
	checkCluster(t, objs, expectations{
		wantNativeSidecar: true,
		wantSecret:        true,
		wantPDB:           true,
		wantNetworkPolicy: true,
		wantHTTPService:   true,
	})

	// The example agent: Switchyard as a native sidecar, the agent as the
	// app container.
	var agent *appsv1.Deployment
	for _, d := range ofType[*appsv1.Deployment](objs) {
		if d.Name == "example-agent" {
			agent = d
		}
	}
	if agent == nil {
		t.Fatal("no example-agent Deployment")
	}
	spec := agent.Spec.Template.Spec
	if len(spec.InitContainers) != 1 || !isNode(&spec.InitContainers[0]) {
		t.Fatalf("example-agent: want the Switchyard sidecar as its only init container, have %d init containers", len(spec.InitContainers))
	}
	if rp := spec.InitContainers[0].RestartPolicy; rp == nil || *rp != corev1.ContainerRestartPolicyAlways {
		t.Error("example-agent: the sidecar needs restartPolicy: Always")
	}
	if spec.InitContainers[0].StartupProbe == nil {
		t.Error("example-agent: the sidecar needs a startup probe, so that the agent starts once the node serves")
	}
	for _, c := range spec.Containers {
		if isNode(&c) {
			t.Errorf("example-agent: container %s runs serve as an app container; it belongs in initContainers as a native sidecar", c.Name)
		}
	}

	// The Secret's placeholders are marked, and a forgotten gossip-key
	// placeholder stops the node at start instead of running with a key
	// everyone knows.
	secrets := ofType[*corev1.Secret](objs)
	if len(secrets) != 1 {
		t.Fatalf("want one Secret, have %d", len(secrets))
	}
	for _, key := range []string{"api-keys", "token-secret", "gossip-key"} {
		v, ok := secrets[0].StringData[key]
		if !ok {
			t.Errorf("Secret %s: no key %s", secrets[0].Name, key)
		} else if !strings.Contains(v, "REPLACE-ME") {
			t.Errorf("Secret %s: %s = %q is not marked as a placeholder (REPLACE-ME)", secrets[0].Name, key, v)
		}
	}
	if validGossipKey(secrets[0].StringData["gossip-key"]) {
		t.Error("the gossip-key placeholder is a valid key: a node would start with it")
	}
}

func TestHelmChartDefaults(t *testing.T) {
	rel := renderHelm(t, nil)
	checkCluster(t, rel.objects, expectations{
		namespace:         "agents",
		wantSecret:        true,
		wantPDB:           true,
		wantNetworkPolicy: true,
		wantHTTPService:   true,
	})
	// Generated secrets are usable: a gossip key the binary accepts.
	secrets := ofType[*corev1.Secret](rel.objects)
	if len(secrets) != 1 {
		t.Fatalf("want one Secret, have %d", len(secrets))
	}
	data := secrets[0].Data
	if len(data["api-keys"]) < 32 || len(data["token-secret"]) < 32 {
		t.Errorf("generated api-keys (%d bytes) and token-secret (%d bytes) should be long random strings", len(data["api-keys"]), len(data["token-secret"]))
	}
	if !validGossipKey(string(data["gossip-key"])) {
		t.Errorf("generated gossip-key %q is not base64 of 16, 24 or 32 bytes", data["gossip-key"])
	}
	for _, want := range []string{"sy-switchyard-gossip.agents.svc:7946", clusterLabel + `: "injected"`,
		"switchyard inject -f agent.yaml --secret-name sy-switchyard --gossip-service sy-switchyard-gossip", "docs/OPERATIONS.md"} {
		if !strings.Contains(rel.notes, want) {
			t.Errorf("NOTES.txt does not say %q:\n%s", want, rel.notes)
		}
	}
}

func TestHelmChartExistingSecret(t *testing.T) {
	rel := renderHelm(t, map[string]any{"secret": map[string]any{"existingSecret": "my-switchyard"}})
	checkCluster(t, rel.objects, expectations{
		namespace:         "agents",
		externalSecrets:   []string{"my-switchyard"},
		wantPDB:           true,
		wantNetworkPolicy: true,
		wantHTTPService:   true,
	})
	if n := len(ofType[*corev1.Secret](rel.objects)); n != 0 {
		t.Errorf("%d Secret(s) rendered with existingSecret set", n)
	}
}

func TestHelmChartValues(t *testing.T) {
	gossipKey := base64.StdEncoding.EncodeToString(make([]byte, 32))
	rel := renderHelm(t, map[string]any{
		"replicaCount":                  3,
		"drainTimeout":                  "1m30s",
		"terminationGracePeriodSeconds": 100,
		"secret": map[string]any{
			"apiKeys":     []any{"key-one", "key-two"},
			"tokenSecret": "token-secret-value",
			"gossipKey":   gossipKey,
		},
		"flags": map[string]any{
			"mailbox-size":    4096,
			"max-body-bytes":  2097152,
			"rate-limit":      0.5,
			"allowed-origins": []any{"app.example.com", "*.example.com"},
		},
		"metrics": map[string]any{
			"serviceMonitor": map[string]any{"enabled": true},
			"podMonitor":     map[string]any{"enabled": true},
		},
	})
	checkCluster(t, rel.objects, expectations{
		namespace:         "agents",
		wantSecret:        true,
		wantPDB:           true,
		wantNetworkPolicy: true,
		wantHTTPService:   true,
	})
	secret := ofType[*corev1.Secret](rel.objects)[0]
	for key, want := range map[string]string{"api-keys": "key-one,key-two", "token-secret": "token-secret-value", "gossip-key": gossipKey} {
		if got := string(secret.Data[key]); got != want {
			t.Errorf("Secret %s = %q; want %q", key, got, want)
		}
	}
	var env map[string]string
	for _, d := range ofType[*appsv1.Deployment](rel.objects) {
		env = map[string]string{}
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			env[e.Name] = e.Value
		}
	}
	for name, want := range map[string]string{
		"SWITCHYARD_MAILBOX_SIZE":    "4096",
		"SWITCHYARD_MAX_BODY_BYTES":  "2097152",
		"SWITCHYARD_RATE_LIMIT":      "0.5",
		"SWITCHYARD_ALLOWED_ORIGINS": "app.example.com,*.example.com",
		"SWITCHYARD_DRAIN_TIMEOUT":   "1m30s",
	} {
		if env[name] != want {
			t.Errorf("env %s = %q; want %q", name, env[name], want)
		}
	}
	if len(ofType[*corev1.Service](rel.objects)) != 2 {
		t.Error("want the HTTP and the gossip Service")
	}
}

func TestHelmChartOptionalPiecesOff(t *testing.T) {
	rel := renderHelm(t, map[string]any{
		"pdb":           map[string]any{"enabled": false},
		"networkPolicy": map[string]any{"enabled": false},
	})
	checkCluster(t, rel.objects, expectations{namespace: "agents", wantSecret: true, wantHTTPService: true})
	for _, o := range rel.objects {
		if o.kind == "PodDisruptionBudget" || o.kind == "NetworkPolicy" {
			t.Errorf("%s rendered although disabled", o)
		}
	}
}

// The chart refuses settings that would break the drain or the node.
func TestHelmChartRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		values map[string]any
		want   string
	}{
		"grace period not above drain and preStop": {
			map[string]any{"drainTimeout": "25s", "terminationGracePeriodSeconds": 30},
			"must exceed preStopSleepSeconds",
		},
		"drain timeout not a duration": {map[string]any{"drainTimeout": "10"}, "not a Go duration"},
		"a flag the chart sets":        {map[string]any{"flags": map[string]any{"listen": "127.0.0.1:9000"}}, "the chart sets --listen itself"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := tryRenderHelm(tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("render error %v; want one saying %q", err, tc.want)
			}
		})
	}
}

// helm lint --strict, through Helm's own lint package (what the CLI runs).
func TestHelmLint(t *testing.T) {
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	for name, values := range map[string]map[string]any{
		"defaults": nil,
		"monitors and existing secret": {
			"secret":  map[string]any{"existingSecret": "mine"},
			"metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}, "podMonitor": map[string]any{"enabled": true}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			result := lint.AllWithKubeVersion(chartDir, values, "agents", kv)
			for _, m := range result.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m)
				} else {
					t.Logf("helm lint: %s", m)
				}
			}
		})
	}
}

// The image cannot be built here (no Docker engine); its Dockerfile is
// checked for what the manifests rely on.
func TestDockerfile(t *testing.T) {
	var lines []string // without comments
	for _, l := range strings.Split(readRepoFile(t, "deploy/Dockerfile"), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			lines = append(lines, l)
		}
	}
	src := strings.Join(lines, "\n")
	stages := regexp.MustCompile(`(?m)^FROM\s`).Split(src, -1)
	final := stages[len(stages)-1]
	def := binaryDefaults(t)
	for _, want := range []struct{ re, why string }{
		{`(?m)^RUN (.*\\\n)*.*\bmake build\b`, "the builder runs `make build`, the command CI runs"},
		{`(?m)^USER 65532(:65532)?$`, "the final image runs as the numeric non-root user 65532 (runAsNonRoot can verify it)"},
		{`(?m)^ENTRYPOINT \["/switchyard"\]$`, `ENTRYPOINT ["/switchyard"]`},
		{`(?m)^CMD \["serve"\]$`, `CMD ["serve"]`},
		{`(?m)^EXPOSE .*\b8787/tcp\b.*\b7946/tcp\b.*\b7946/udp\b`, "EXPOSE 8787/tcp 7946/tcp 7946/udp"},
		{`org\.opencontainers\.image\.source=`, "OCI labels"},
	} {
		target := final
		if strings.Contains(want.re, "make build") {
			target = src
		}
		if !regexp.MustCompile(want.re).MatchString(target) {
			t.Errorf("deploy/Dockerfile: want %s", want.why)
		}
	}
	if def.httpPort != 8787 || def.gossipPort != 7946 {
		t.Errorf("the binary's default ports are %d and %d; update EXPOSE in deploy/Dockerfile", def.httpPort, def.gossipPort)
	}
	base := regexp.MustCompile(`ARG BASE_IMAGE=(\S+)`).FindStringSubmatch(src)
	if base == nil || !(strings.HasPrefix(base[1], "gcr.io/distroless/static") || base[1] == "scratch") {
		t.Errorf("deploy/Dockerfile: the final image must be distroless static or scratch (no shell), have %v", base)
	}
	if !strings.Contains(readRepoFile(t, "Makefile"), "CGO_ENABLED=0") {
		t.Error("Makefile: the build must be static (CGO_ENABLED=0)")
	}
}

var metricRef = regexp.MustCompile(`\bswitchyard_[a-z0-9_]+`)

// metricsIn returns the switchyard_* metric names text mentions, with
// histogram suffixes removed.
func metricsIn(text string) map[string]bool {
	out := map[string]bool{}
	for _, m := range metricRef.FindAllString(text, -1) {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(m, "_seconds"+suffix) {
				m = strings.TrimSuffix(m, suffix)
			}
		}
		out[m] = true
	}
	return out
}

func TestGrafanaDashboard(t *testing.T) {
	raw := readRepoFile(t, "deploy/grafana/switchyard-dashboard.json")
	var dash struct {
		Title         string `json:"title"`
		UID           string `json:"uid"`
		SchemaVersion int    `json:"schemaVersion"`
		Panels        []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(raw), &dash); err != nil {
		t.Fatalf("not valid JSON: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || dash.SchemaVersion == 0 || len(dash.Panels) == 0 {
		t.Fatal("want a title, a uid, a schemaVersion and panels")
	}
	var exprs strings.Builder
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			checkPromQL(t, "panel "+p.Title, tg.Expr)
			exprs.WriteString(tg.Expr + "\n")
		}
	}
	used := metricsIn(exprs.String())
	registered := registeredMetrics(t)
	known := map[string]bool{}
	for _, m := range registered {
		known[m] = true
		if !used[m] {
			t.Errorf("the dashboard shows no panel for %s", m)
		}
	}
	for m := range used {
		if !known[m] {
			t.Errorf("the dashboard queries %s, which the code does not register", m)
		}
	}
}

func TestOperationsDoc(t *testing.T) {
	doc := readRepoFile(t, "docs/OPERATIONS.md")
	known := map[string]bool{}
	for _, m := range registeredMetrics(t) {
		known[m] = true
		if !strings.Contains(doc, "`"+m+"`") {
			t.Errorf("docs/OPERATIONS.md does not document the metric %s", m)
		}
	}
	for m := range metricsIn(doc) {
		if !known[m] {
			t.Errorf("docs/OPERATIONS.md names %s, which the code does not register", m)
		}
	}
	for _, msg := range nodeLogMessages(t) {
		if !strings.Contains(doc, msg) {
			t.Errorf("docs/OPERATIONS.md does not list the log message %q", msg)
		}
	}
	for _, want := range []string{"go_goroutines", "process_resident_memory_bytes", "kubectl apply -k", "helm install"} {
		if !strings.Contains(doc, want) {
			t.Errorf("docs/OPERATIONS.md does not mention %s", want)
		}
	}
	if _, err := os.Stat("../grafana/switchyard-dashboard.json"); err != nil {
		t.Error(err)
	}
}

// grafanaVars replaces the dashboard's variables so that its queries parse
// as plain PromQL.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$namespace", ".*", "$pod", ".*")

func checkPromQL(t *testing.T, where, expr string) {
	t.Helper()
	if _, err := parser.NewParser(parser.Options{}).ParseExpr(grafanaVars.Replace(expr)); err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
	}
}

// The alert rules in docs/OPERATIONS.md are a valid Prometheus rules file
// whose expressions parse.
func TestOperationsAlerts(t *testing.T) {
	doc := readRepoFile(t, "docs/OPERATIONS.md")
	block := regexp.MustCompile("(?s)```yaml\n(groups:\n.*?)```").FindStringSubmatch(doc)
	if block == nil {
		t.Fatal("docs/OPERATIONS.md has no ```yaml block of alert rules starting with groups:")
	}
	var rules struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict([]byte(block[1]), &rules); err != nil {
		t.Fatalf("alert rules: %v", err)
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %q: want alert, labels.severity and annotations.summary", r.Alert)
			}
			checkPromQL(t, "alert "+r.Alert, r.Expr)
		}
	}
	if n < 5 {
		t.Errorf("only %d alert rules", n)
	}
}

// The image the manifests name is the one `make image` builds: the
// Makefile's RELEASE is the kustomize base's tag, the chart's appVersion,
// the tag `switchyard inject` puts in by default, and the one the README
// says to push; the repository is the same everywhere.
func TestImageIsTheRelease(t *testing.T) {
	makefile := readRepoFile(t, "Makefile")
	m := regexp.MustCompile(`(?m)^RELEASE := (\S+)$`).FindStringSubmatch(makefile)
	if m == nil {
		t.Fatal("Makefile: no RELEASE := <version>")
	}
	release := m[1]
	if !regexp.MustCompile(`(?m)^VERSION \?= \$\(RELEASE\)$`).MatchString(makefile) {
		t.Error("Makefile: VERSION must default to $(RELEASE), so that `make image` builds the release the manifests name")
	}
	im := regexp.MustCompile(`(?m)^IMAGE \?= (\S+):\$\(VERSION\)$`).FindStringSubmatch(makefile)
	if im == nil {
		t.Fatal("Makefile: no IMAGE ?= <repository>:$(VERSION)")
	}
	want := im[1] + ":" + release

	images := func(objs []object) map[string]bool {
		out := map[string]bool{}
		for _, p := range pods(objs) {
			for _, n := range nodesOf(p) {
				out[n.c.Image] = true
			}
		}
		return out
	}
	for name, objs := range map[string][]object{
		"the kustomize base": renderKustomize(t),
		"the Helm chart":     renderHelm(t, nil).objects,
	} {
		got := images(objs)
		if len(got) != 1 || !got[want] {
			t.Errorf("%s runs %v; want %s, what make image builds", name, got, want)
		}
	}

	readme := readRepoFile(t, "README.md")
	for _, s := range []string{"make image", "docker push " + want} {
		if !strings.Contains(readme, s) {
			t.Errorf("README.md does not say %q", s)
		}
	}

	if testing.Short() {
		return
	}
	// A binary built without make (no version stamped) injects the release.
	out, err := exec.Command(buildBinary(t), "inject", "-h").CombinedOutput()
	if !strings.Contains(string(out), "(default "+want+")") {
		t.Errorf("switchyard inject's default --image is not %s (%v):\n%s", want, err, out)
	}
}
