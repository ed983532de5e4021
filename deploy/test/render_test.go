package deploytest

// Rendering the kustomize base and the Helm chart, and decoding every
// object strictly into the Kubernetes API types.

import (
	"bytes"
	"fmt"
	"path"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const (
	kustomizeDir = "../kubernetes"
	chartDir     = "../helm/switchyard"
	// The oldest Kubernetes the manifests are for: native sidecars (1.29)
	// and the preStop sleep action (1.30).
	kubeVersion = "v1.30.0"
)

// object is one rendered Kubernetes object, decoded into its API type.
type object struct {
	source string // where it came from, for messages
	kind   string
	name   string
	obj    any // *appsv1.Deployment, *corev1.Service, ...
}

func (o object) String() string { return fmt.Sprintf("%s %s (%s)", o.kind, o.name, o.source) }

// kinds are the API types the deployment may contain. Anything else fails
// the test: add it here with its Go type.
var kinds = map[string]func() any{
	"v1/Secret":                               func() any { return &corev1.Secret{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                     func() any { return &appsv1.StatefulSet{} },
	"apps/v1/DaemonSet":                       func() any { return &appsv1.DaemonSet{} },
	"batch/v1/Job":                            func() any { return &batchv1.Job{} },
	"batch/v1/CronJob":                        func() any { return &batchv1.CronJob{} },
	"v1/Pod":                                  func() any { return &corev1.Pod{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":      func() any { return &networkingv1.NetworkPolicy{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1/PodMonitor":     func() any { return &monitoringv1.PodMonitor{} },
}

// decodeStrict decodes one YAML document into its API type; unknown or
// duplicate fields are errors.
func decodeStrict(source string, doc []byte) (object, error) {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return object{}, fmt.Errorf("%s: %w", source, err)
	}
	newObj, ok := kinds[meta.APIVersion+"/"+meta.Kind]
	if !ok {
		return object{}, fmt.Errorf("%s: %s %s: no API type known to this test for %s/%s", source, meta.Kind, meta.Metadata.Name, meta.APIVersion, meta.Kind)
	}
	obj := newObj()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return object{}, fmt.Errorf("%s: %s %s: %w", source, meta.Kind, meta.Metadata.Name, err)
	}
	return object{source: source, kind: meta.Kind, name: meta.Metadata.Name, obj: obj}, nil
}

// renderKustomize builds the kustomize base as `kubectl kustomize` does.
func renderKustomize(t *testing.T) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := k.Run(filesys.MakeFsOnDisk(), kustomizeDir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", kustomizeDir, err)
	}
	var out []object
	for _, r := range resources.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		o, err := decodeStrict("kustomize "+r.CurId().String(), doc)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, o)
	}
	return out
}

// helmRelease is the chart rendered as `helm template` does.
type helmRelease struct {
	objects []object
	notes   string
}

// renderHelm renders the chart with values, offline (like `helm template`),
// as release "sy" in namespace "agents".
func renderHelm(t *testing.T, values map[string]any) helmRelease {
	t.Helper()
	rel, err := tryRenderHelm(values)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

func tryRenderHelm(values map[string]any) (helmRelease, error) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		return helmRelease{}, fmt.Errorf("load chart: %w", err)
	}
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return helmRelease{}, err
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = *kv
	caps.APIVersions = append(caps.APIVersions, "monitoring.coreos.com/v1")
	if c := chrt.Metadata.KubeVersion; c != "" && !chartutil.IsCompatibleRange(c, kv.String()) {
		return helmRelease{}, fmt.Errorf("chart requires kubeVersion %s, not %s", c, kv)
	}
	// What `helm template` does, without pkg/action and its Kubernetes
	// clients: coalesce and validate the values, render every template.
	vals, err := chartutil.ToRenderValues(chrt, values, chartutil.ReleaseOptions{
		Name: "sy", Namespace: "agents", Revision: 1, IsInstall: true,
	}, caps)
	if err != nil {
		return helmRelease{}, fmt.Errorf("values: %w", err)
	}
	files, err := engine.Render(chrt, vals)
	if err != nil {
		return helmRelease{}, fmt.Errorf("render chart: %w", err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var rel helmRelease
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") {
			rel.notes = files[name]
			continue
		}
		if strings.HasPrefix(path.Base(name), "_") {
			continue // partials
		}
		manifests := releaseutil.SplitManifests(files[name])
		keys := make([]string, 0, len(manifests))
		for k := range manifests {
			keys = append(keys, k)
		}
		sort.Sort(releaseutil.BySplitManifestsOrder(keys))
		for _, k := range keys {
			doc := manifests[k]
			if len(bytes.TrimSpace([]byte(doc))) == 0 {
				continue
			}
			o, err := decodeStrict("helm "+name, []byte(doc))
			if err != nil {
				return helmRelease{}, err
			}
			rel.objects = append(rel.objects, o)
		}
	}
	return rel, nil
}
