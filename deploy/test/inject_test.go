package deploytest

// `switchyard inject` and the manifests must fit together: an agent
// Deployment run through inject, deployed beside the kustomize base or the
// Helm chart, is a node of their cluster (selected by the gossip Service and
// the NetworkPolicy, joining through the headless Service, with its Secret
// references resolving), and keeps the invariants.

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

const plainAgent = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-agent
spec:
  replicas: 2
  selector:
    matchLabels: {app: my-agent}
  template:
    metadata:
      labels: {app: my-agent}
    spec:
      containers:
        - name: agent
          image: registry.example.com/my-agent:1
          securityContext: {runAsNonRoot: true, runAsUser: 1000}
`

func injectAgent(t *testing.T, args ...string) []object {
	t.Helper()
	objs, _ := injectManifest(t, plainAgent, args...)
	if len(objs) != 1 {
		t.Fatalf("inject wrote %d objects; want the one Deployment", len(objs))
	}
	return objs
}

// injectManifest runs `switchyard inject` on manifest and returns the
// objects it wrote and its stderr.
func injectManifest(t *testing.T, manifest string, args ...string) ([]object, string) {
	t.Helper()
	cmd := exec.Command(buildBinary(t), append([]string{"inject", "-f", "-", "--image", "ghcr.io/switchyard-gw/switchyard:dev"}, args...)...)
	cmd.Stdin = bytes.NewBufferString(manifest)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("switchyard inject: %v\n%s", err, stderr.String())
	}
	var objs []object
	for _, doc := range releaseutil.SplitManifests(string(out)) {
		o, err := decodeStrict("switchyard inject", []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o)
	}
	return objs, stderr.String()
}

// withoutExampleAgent drops the base's example agent and its budget.
func withoutExampleAgent(objs []object) []object {
	var out []object
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *appsv1.Deployment:
			if v.Name == "example-agent" {
				continue
			}
		case *policyv1.PodDisruptionBudget:
			if v.Name == "example-agent" {
				continue
			}
		}
		out = append(out, o)
	}
	return out
}

func TestInjectedAgentJoinsTheKustomizeBase(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	objs := append(withoutExampleAgent(renderKustomize(t)), injectAgent(t)...)
	checkCluster(t, objs, expectations{
		wantNativeSidecar: true,
		wantSecret:        true,
		wantNetworkPolicy: true,
		wantHTTPService:   true,
	})
}

func TestInjectedAgentJoinsTheHelmRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	objs := append(renderHelm(t, nil).objects, injectAgent(t, "--secret-name", "sy-switchyard", "--gossip-service", "sy-switchyard-gossip")...)
	checkCluster(t, objs, expectations{
		namespace:         "agents",
		wantNativeSidecar: true,
		wantSecret:        true,
		wantNetworkPolicy: true,
		wantHTTPService:   true,
	})
}

// A Job, a CronJob and a bare Pod are agent workloads too: a native sidecar
// does not keep a Job from completing.
const batchAgents = `apiVersion: batch/v1
kind: Job
metadata:
  name: batch-agent
spec:
  template:
    metadata:
      labels: {app: batch-agent}
    spec:
      restartPolicy: Never
      containers:
        - name: agent
          image: registry.example.com/my-agent:1
          securityContext: {runAsNonRoot: true, runAsUser: 1000}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly-agent
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          labels: {app: nightly-agent}
        spec:
          restartPolicy: OnFailure
          containers:
            - name: agent
              image: registry.example.com/my-agent:1
              securityContext: {runAsNonRoot: true, runAsUser: 1000}
---
apiVersion: v1
kind: Pod
metadata:
  name: one-agent
  labels: {app: one-agent}
spec:
  containers:
    - name: agent
      image: registry.example.com/my-agent:1
      securityContext: {runAsNonRoot: true, runAsUser: 1000}
`

func TestInjectedJobsAndPodsJoinTheKustomizeBase(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	injected, _ := injectManifest(t, batchAgents)
	if len(injected) != 3 {
		t.Fatalf("inject wrote %d objects; want 3", len(injected))
	}
	for _, p := range pods(injected) {
		if len(nodesOf(p)) != 1 {
			t.Errorf("%s: no sidecar", p.owner)
		}
	}
	checkCluster(t, append(withoutExampleAgent(renderKustomize(t)), injected...), expectations{
		wantNativeSidecar: true,
		wantSecret:        true,
		wantNetworkPolicy: true,
		wantHTTPService:   true,
	})
}

// The NetworkPolicy selects the agent's pods and admits only Switchyard's
// ports; inject names, on stderr, exactly the agent's declared ports that
// no policy rendered alongside opens.
func TestInjectWarnsOfThePortsThePolicyCloses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	withPorts := strings.Replace(plainAgent, "          securityContext:", `          ports:
            - {name: http, containerPort: 8080}
            - {name: metrics, containerPort: 9100}
          securityContext:`, 1)
	for name, policies := range map[string][]object{
		"kustomize": renderKustomize(t),
		"helm":      renderHelm(t, nil).objects,
	} {
		injected, stderr := injectManifest(t, withPorts)
		p := pods(injected)[0]
		for _, port := range []int{8080, 9100} {
			if opened := policiesOpen(ofType[*networkingv1.NetworkPolicy](policies), p, port); opened {
				t.Errorf("%s: a policy opens %d; the test is stale", name, port)
			}
			if !strings.Contains(stderr, fmt.Sprintf("%d/TCP", port)) || !strings.Contains(stderr, "WARNING") {
				t.Errorf("%s: inject does not warn that the NetworkPolicy closes %d/TCP; stderr:\n%s", name, port, stderr)
			}
		}
		if strings.Contains(stderr, "8787") {
			t.Errorf("%s: inject warns of Switchyard's own port:\n%s", name, stderr)
		}
	}
	if _, stderr := injectManifest(t, plainAgent); stderr != "" {
		t.Errorf("inject warns about an agent that declares no ports:\n%s", stderr)
	}
}

// policiesOpen tells whether some policy selecting the pod opens port/TCP.
func policiesOpen(policies []*networkingv1.NetworkPolicy, p pod, port int) bool {
	for _, np := range policies {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !sel.Matches(labels.Set(p.labels)) {
			continue
		}
		for _, rule := range np.Spec.Ingress {
			if len(rule.Ports) == 0 {
				return true
			}
			for _, pp := range rule.Ports {
				if pp.Port != nil && pp.Port.IntValue() == port {
					return true
				}
			}
		}
	}
	return false
}

// What inject is not given right fails, non-zero, saying why: the chart's
// own templates, and a file named without -f (which would otherwise wait
// on stdin).
func TestInjectRefusesWhatIsNoManifest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"inject", "-f", repoRoot + "/deploy/helm/switchyard/templates/deployment.yaml"}, "helm template"},
		{[]string{"inject", repoRoot + "/deploy/kubernetes/agent-deployment.yaml"}, "-f"},
	} {
		cmd := exec.Command(buildBinary(t), tc.args...)
		cmd.Stdin = strings.NewReader("")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err == nil {
			t.Errorf("switchyard %v succeeded; want it to fail", tc.args)
		}
		if len(out) > 0 {
			t.Errorf("switchyard %v wrote to stdout:\n%s", tc.args, out)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("switchyard %v: stderr %q does not say %q", tc.args, stderr.String(), tc.want)
		}
	}
}
