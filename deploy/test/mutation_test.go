package deploytest

// The checks must catch what they claim to: each case breaks one thing in
// the rendered kustomize base and expects checkCluster to say so.

import (
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// recorder collects what the checks report instead of failing the test.
type recorder struct {
	testing.TB
	errs []string
}

type fatal struct{}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Error(args ...any) { r.errs = append(r.errs, fmt.Sprint(args...)) }
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	panic(fatal{})
}
func (r *recorder) Fatal(args ...any) {
	r.Error(args...)
	panic(fatal{})
}

func (r *recorder) run(f func()) {
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(fatal); !ok {
				panic(v)
			}
		}
	}()
	f()
}

func deployment(objs []object, name string) *appsv1.Deployment {
	for _, d := range ofType[*appsv1.Deployment](objs) {
		if d.Name == name {
			return d
		}
	}
	panic("no Deployment " + name)
}

func sidecar(objs []object) *corev1.Container {
	return &deployment(objs, "example-agent").Spec.Template.Spec.InitContainers[0]
}

func edge(objs []object) *corev1.Container {
	return &deployment(objs, "switchyard-edge").Spec.Template.Spec.Containers[0]
}

func env(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	panic("no env " + name)
}

func setEnv(c *corev1.Container, name, value string) {
	for i := range c.Env {
		if c.Env[i].Name == name {
			c.Env[i].Value = value
			return
		}
	}
	c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value})
}

func TestChecksCatchBreakage(t *testing.T) {
	udp := corev1.ProtocolUDP
	cases := []struct {
		name   string
		break_ func(objs []object)
		want   string
	}{
		{"sidecar without restartPolicy", func(o []object) { sidecar(o).RestartPolicy = nil }, "restartPolicy: Always"},
		{"sidecar without a startup probe", func(o []object) { sidecar(o).StartupProbe = nil }, "needs a startup probe"},
		{"sidecar without GOMEMLIMIT", func(o []object) {
			c := sidecar(o)
			var kept []corev1.EnvVar
			for _, e := range c.Env {
				if e.Name != "GOMEMLIMIT" {
					kept = append(kept, e)
				}
			}
			c.Env = kept
		}, "no GOMEMLIMIT"},
		{"agent without SWITCHYARD_URL", func(o []object) {
			c := &deployment(o, "example-agent").Spec.Template.Spec.Containers[0]
			setEnv(c, "SWITCHYARD_URL", "http://switchyard:8787")
		}, "SWITCHYARD_URL"},
		{"agent grace period without room for the agent", func(o []object) {
			g := int64(16)
			deployment(o, "example-agent").Spec.Template.Spec.TerminationGracePeriodSeconds = &g
		}, "leaves the agent less than"},
		{"grace period too short", func(o []object) {
			g := int64(12)
			deployment(o, "switchyard-edge").Spec.Template.Spec.TerminationGracePeriodSeconds = &g
		}, "terminationGracePeriodSeconds"},
		{"drain longer than the grace period, as an argument", func(o []object) {
			edge(o).Args = append(edge(o).Args, "--drain-timeout=40s")
		}, "terminationGracePeriodSeconds"},
		{"preStop exec", func(o []object) {
			edge(o).Lifecycle.PreStop = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sleep", "5"}}}
		}, "preStop exec"},
		{"readiness on the wrong path", func(o []object) { edge(o).ReadinessProbe.HTTPGet.Path = "/healthz" }, "readiness probe path"},
		{"liveness on the wrong port", func(o []object) { sidecar(o).LivenessProbe.HTTPGet.Port = intstr.FromInt32(9090) }, "liveness probe port"},
		{"listen on another port", func(o []object) { setEnv(edge(o), "SWITCHYARD_LISTEN", "0.0.0.0:9000") }, "--listen port"},
		{"listen on loopback", func(o []object) { setEnv(sidecar(o), "SWITCHYARD_LISTEN", "127.0.0.1:8787") }, "--listen"},
		{"a misspelt flag variable", func(o []object) { setEnv(edge(o), "SWITCHYARD_GOSIP_KEY", "x") }, "is no `switchyard serve` flag"},
		{"POD_IP used before it is defined", func(o []object) {
			c := edge(o)
			first := []corev1.EnvVar{*env(c, "SWITCHYARD_ADVERTISE_URL")}
			for _, e := range c.Env {
				if e.Name != "SWITCHYARD_ADVERTISE_URL" {
					first = append(first, e)
				}
			}
			c.Env = first
		}, "refers to $(POD_IP), which is not defined before it"},
		{"gossip advertised on the pod name", func(o []object) { setEnv(edge(o), "SWITCHYARD_GOSSIP_ADVERTISE", "$(POD_NAME):7946") }, "--gossip-advertise"},
		{"join a name that is not rendered", func(o []object) { setEnv(edge(o), "SWITCHYARD_JOIN", "gossip:7946") }, "names no Service"},
		{"join the ClusterIP Service", func(o []object) { setEnv(edge(o), "SWITCHYARD_JOIN", "switchyard:7946") }, "is not headless"},
		{"no UDP gossip port on the container", func(o []object) { sidecar(o).Ports = sidecar(o).Ports[:2] }, "ports must include"},
		{"headless Service without UDP", func(o []object) {
			s := findService(o, "switchyard-gossip")
			s.Spec.Ports = s.Spec.Ports[:1]
		}, "TCP and UDP"},
		{"headless Service publishes only ready pods", func(o []object) {
			findService(o, "switchyard-gossip").Spec.PublishNotReadyAddresses = false
		}, "publishNotReadyAddresses"},
		{"agent pods not selected by the gossip Service", func(o []object) {
			deployment(o, "example-agent").Spec.Template.Labels[clusterLabel] = "other"
		}, "does not select the pods of Deployment example-agent"},
		{"NetworkPolicy without gossip UDP between nodes", func(o []object) {
			np := ofType[*networkingv1.NetworkPolicy](o)[0]
			np.Spec.Ingress[0].Ports = np.Spec.Ingress[0].Ports[:2]
		}, "cannot reach each other on 7946/UDP"},
		{"NetworkPolicy opening gossip to clients", func(o []object) {
			np := ofType[*networkingv1.NetworkPolicy](o)[0]
			p := intstr.FromInt32(7946)
			np.Spec.Ingress[1].Ports = append(np.Spec.Ingress[1].Ports, networkingv1.NetworkPolicyPort{Port: &p, Protocol: &udp})
		}, "opens 7946/UDP to pods that are not Switchyard nodes"},
		{"NetworkPolicy rule without ports", func(o []object) {
			ofType[*networkingv1.NetworkPolicy](o)[0].Spec.Ingress[1].Ports = nil
		}, "opens every port"},
		{"Secret key that does not exist", func(o []object) {
			env(sidecar(o), "SWITCHYARD_GOSSIP_KEY").ValueFrom.SecretKeyRef.Key = "gossip"
		}, "has no such key"},
		{"Secret that is not rendered", func(o []object) {
			c := &deployment(o, "example-agent").Spec.Template.Spec.Containers[0]
			c.EnvFrom = append(c.EnvFrom, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "elsewhere"}}})
		}, "not rendered alongside"},
		{"agent container allowed to run as root", func(o []object) {
			f := false
			deployment(o, "example-agent").Spec.Template.Spec.Containers[0].SecurityContext.RunAsNonRoot = &f
		}, "runAsNonRoot is not true"},
		{"writable root filesystem", func(o []object) {
			f := false
			edge(o).SecurityContext.ReadOnlyRootFilesystem = &f
		}, "readOnlyRootFilesystem"},
		{"GOMEMLIMIT above the limit", func(o []object) { setEnv(edge(o), "GOMEMLIMIT", "1GiB") }, "GOMEMLIMIT"},
		{"one replica under a budget", func(o []object) {
			one := int32(1)
			deployment(o, "switchyard-edge").Spec.Replicas = &one
		}, "with 1 replica"},
		{"HTTP Service to the gossip port", func(o []object) {
			findService(o, "switchyard").Spec.Ports[0].TargetPort = intstr.FromString("gossip-tcp")
		}, "targets gossip-tcp"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs := renderKustomize(t)
			tc.break_(objs)
			r := &recorder{TB: t}
			r.run(func() {
				checkCluster(r, objs, expectations{wantNativeSidecar: true, wantSecret: true, wantPDB: true, wantNetworkPolicy: true, wantHTTPService: true})
			})
			for _, e := range r.errs {
				if strings.Contains(e, tc.want) {
					return
				}
			}
			t.Errorf("no error saying %q; the checks said:\n%s", tc.want, strings.Join(r.errs, "\n"))
		})
	}
}

// Strict decoding refuses what the API server would drop or refuse.
func TestDecodeStrict(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  publishNotReadyAddress: true\n",
		"duplicate key": "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  clusterIP: None\n  clusterIP: 10.0.0.1\n",
		"wrong type":    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: two\n",
		"unknown kind":  "apiVersion: v1\nkind: Pod2\nmetadata: {name: p}\n",
		"misplaced key": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec:\n      containers:\n        - name: c\n          restartPolicy: Always\n          probe: {}\n",
	} {
		if _, err := decodeStrict(name, []byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if _, err := decodeStrict("ok", []byte("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  clusterIP: None\n")); err != nil {
		t.Errorf("a valid Service: %v", err)
	}
}
