package deploytest

// `switchyard inject` and the manifests must fit together: an agent
// Deployment run through inject, deployed beside the kustomize base or the
// Helm chart, is a node of their cluster (selected by the gossip Service and
// the NetworkPolicy, joining through the headless Service, with its Secret
// references resolving), and keeps the invariants.

import (
	"bytes"
	"os/exec"
	"testing"

	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	policyv1 "k8s.io/api/policy/v1"
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
	cmd := exec.Command(buildBinary(t), append([]string{"inject", "-f", "-", "--image", "ghcr.io/switchyard-gw/switchyard:dev"}, args...)...)
	cmd.Stdin = bytes.NewBufferString(plainAgent)
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
	if len(objs) != 1 {
		t.Fatalf("inject wrote %d objects; want the one Deployment", len(objs))
	}
	return objs
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
