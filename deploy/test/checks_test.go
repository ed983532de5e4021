package deploytest

// The invariants every rendering of the deployment must keep.

import (
	"encoding/base64"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// clusterLabel is the pod label that makes a pod a member of a Switchyard
// cluster: the gossip Service and the NetworkPolicy select it, and
// `switchyard inject` gives it to the pods it adds the sidecar to.
const clusterLabel = "switchyard.io/sidecar"

// expectations are what a rendering must contain besides the invariants.
type expectations struct {
	namespace string // the namespace the objects land in ("" for kustomize: the user's)
	// externalSecrets are Secrets managed outside the rendering that
	// references may name (the chart's existingSecret).
	externalSecrets []string
	// wantNativeSidecar: at least one workload runs Switchyard as a native
	// sidecar next to other containers.
	wantNativeSidecar bool
	wantSecret        bool // a Secret is rendered
	wantPDB           bool
	wantNetworkPolicy bool
	wantHTTPService   bool
}

// pod is a workload's pod template.
type pod struct {
	owner    object
	replicas int32
	labels   map[string]string
	spec     *corev1.PodSpec
}

// node is a container that runs `switchyard serve`.
type node struct {
	pod  pod
	c    *corev1.Container
	init bool
	env  map[string]string // literal values; from valueFrom: "<from>"
	args map[string]string // --flag=value or --flag value
}

func pods(objs []object) []pod {
	var out []pod
	for _, o := range objs {
		switch w := o.obj.(type) {
		case *appsv1.Deployment:
			out = append(out, pod{owner: o, replicas: replicas(w.Spec.Replicas), labels: w.Spec.Template.Labels, spec: &w.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			out = append(out, pod{owner: o, replicas: replicas(w.Spec.Replicas), labels: w.Spec.Template.Labels, spec: &w.Spec.Template.Spec})
		case *appsv1.DaemonSet:
			out = append(out, pod{owner: o, replicas: 1, labels: w.Spec.Template.Labels, spec: &w.Spec.Template.Spec})
		case *batchv1.Job:
			out = append(out, pod{owner: o, replicas: 1, labels: w.Spec.Template.Labels, spec: &w.Spec.Template.Spec})
		case *batchv1.CronJob:
			tmpl := &w.Spec.JobTemplate.Spec.Template
			out = append(out, pod{owner: o, replicas: 1, labels: tmpl.Labels, spec: &tmpl.Spec})
		case *corev1.Pod:
			out = append(out, pod{owner: o, replicas: 1, labels: w.Labels, spec: &w.Spec})
		}
	}
	return out
}

func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

func ofType[T any](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// isNode tells whether a container runs `switchyard serve`.
func isNode(c *corev1.Container) bool {
	cmd := append(append([]string(nil), c.Command...), c.Args...)
	for i, a := range cmd {
		if a == "serve" {
			return i == 0 || strings.HasSuffix(cmd[0], "switchyard")
		}
	}
	return false
}

func nodesOf(p pod) []node {
	var out []node
	add := func(cs []corev1.Container, init bool) {
		for i := range cs {
			c := &cs[i]
			if !isNode(c) {
				continue
			}
			n := node{pod: p, c: c, init: init, env: map[string]string{}, args: map[string]string{}}
			for _, e := range c.Env {
				if e.ValueFrom != nil {
					n.env[e.Name] = "<from>"
				} else {
					n.env[e.Name] = e.Value
				}
			}
			for i := 0; i < len(c.Args); i++ {
				a := c.Args[i]
				if !strings.HasPrefix(a, "-") {
					continue
				}
				name, val, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
				if !ok && i+1 < len(c.Args) {
					val = c.Args[i+1]
					i++
				}
				n.args[name] = val
			}
			out = append(out, n)
		}
	}
	add(p.spec.InitContainers, true)
	add(p.spec.Containers, false)
	return out
}

// flag is a serve flag's effective setting: the argument wins over the
// environment, as in the binary.
func (n node) flag(name string) (string, bool) {
	if v, ok := n.args[name]; ok {
		return v, true
	}
	v, ok := n.env["SWITCHYARD_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))]
	return v, ok
}

// checkCluster checks one rendering.
func checkCluster(t testing.TB, objs []object, want expectations) {
	t.Helper()
	def := binaryDefaults(t)
	envFlags := envToFlag(t)

	checkNames(t, objs)

	secrets := map[string]map[string]bool{} // name -> keys
	for _, s := range ofType[*corev1.Secret](objs) {
		keys := map[string]bool{}
		for k := range s.Data {
			keys[k] = true
		}
		for k := range s.StringData {
			keys[k] = true
		}
		secrets[s.Name] = keys
	}
	if want.wantSecret && len(secrets) == 0 {
		t.Error("no Secret rendered")
	}
	for _, name := range want.externalSecrets {
		if _, ok := secrets[name]; ok {
			t.Errorf("Secret %s is rendered although it is managed outside (existingSecret)", name)
		}
		secrets[name] = nil // any key
	}

	allPods := pods(objs)
	if len(allPods) == 0 {
		t.Fatal("no workload rendered")
	}
	var nodePods []pod
	sawNativeSidecar := false
	for _, p := range allPods {
		checkSecretRefs(t, p, secrets)
		checkNonRoot(t, p)
		nodes := nodesOf(p)
		if len(nodes) == 0 {
			if p.labels[clusterLabel] != "" {
				t.Errorf("%s: has the cluster label but runs no `switchyard serve` container", p.owner)
			}
			continue
		}
		if len(nodes) > 1 {
			t.Errorf("%s: %d Switchyard containers in one pod; one node per pod", p.owner, len(nodes))
		}
		if p.labels[clusterLabel] == "" {
			t.Errorf("%s: runs Switchyard but its pods lack the label %s", p.owner, clusterLabel)
		}
		nodePods = append(nodePods, p)
		for _, n := range nodes {
			checkNode(t, n, def, envFlags, objs)
			if n.init && len(p.spec.Containers) > 0 {
				sawNativeSidecar = true
				checkAgent(t, n, def)
			}
		}
	}
	if len(nodePods) == 0 {
		t.Fatal("no workload runs `switchyard serve`")
	}
	if want.wantNativeSidecar && !sawNativeSidecar {
		t.Error("no workload runs Switchyard as a native sidecar (an init container with restartPolicy: Always beside the app's containers)")
	}

	checkGossipService(t, objs, nodePods, def)
	checkHTTPService(t, objs, allPods, want.wantHTTPService, def)
	checkNetworkPolicy(t, objs, nodePods, allPods, want.wantNetworkPolicy, def)
	checkPDBs(t, objs, allPods, want.wantPDB)
	checkMonitors(t, objs, allPods)
}

// agentShutdownMargin is what an agent pod's grace period must leave, past
// the sidecar's preStop and drain, for the agent's own shutdown: the kubelet
// stops a native sidecar only after the agent has exited.
const agentShutdownMargin = 5 * time.Second

// checkAgent: a native sidecar beside an agent must be right on first
// apply. The agent starts only once its sidecar serves (a startup probe on
// the sidecar holds the main containers), finds it on loopback with an API
// key, and its shutdown, the preStop and the drain fit in the grace period;
// the sidecar's Go runtime knows its memory limit.
func checkAgent(t testing.TB, n node, def defaults) {
	t.Helper()
	where := fmt.Sprintf("%s: container %s", n.pod.owner, n.c.Name)
	if n.c.StartupProbe == nil {
		t.Errorf("%s: a native sidecar needs a startup probe, or the agent starts before its gateway serves", where)
	}
	if _, ok := n.env["GOMEMLIMIT"]; !ok {
		t.Errorf("%s: no GOMEMLIMIT: Go does not know the memory limit and the sidecar is killed instead of collecting", where)
	}
	drain := def.drainTimeout
	if v, ok := n.flag("drain-timeout"); ok {
		if d, err := time.ParseDuration(v); err == nil {
			drain = d
		}
	}
	var preStop time.Duration
	if l := n.c.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	grace := 30 * time.Second
	if g := n.pod.spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace < preStop+drain+agentShutdownMargin {
		t.Errorf("%s: terminationGracePeriodSeconds %v leaves the agent less than %v past the preStop %v and the drain %v", where, grace, agentShutdownMargin, preStop, drain)
	}
	wantURL := fmt.Sprintf("http://127.0.0.1:%d", def.httpPort)
	for _, c := range n.pod.spec.Containers {
		var url string
		var key *corev1.EnvVarSource
		for _, e := range c.Env {
			switch e.Name {
			case "SWITCHYARD_URL":
				url = e.Value
			case "SWITCHYARD_API_KEY":
				key = e.ValueFrom
			}
		}
		if url != wantURL {
			t.Errorf("%s: container %s: SWITCHYARD_URL is %q; want %s, its sidecar", n.pod.owner, c.Name, url, wantURL)
		}
		if key == nil || key.SecretKeyRef == nil {
			t.Errorf("%s: container %s: SWITCHYARD_API_KEY must come from the Secret", n.pod.owner, c.Name)
		}
	}
}

// checkNames validates object names and label keys and values as the API
// server would.
func checkNames(t testing.TB, objs []object) {
	t.Helper()
	for _, o := range objs {
		var meta *metav1.ObjectMeta
		switch v := o.obj.(type) {
		case *corev1.Service:
			meta = &v.ObjectMeta
			for _, e := range validation.IsDNS1035Label(v.Name) {
				t.Errorf("%s: Service name: %s", o, e)
			}
		case *appsv1.Deployment:
			meta = &v.ObjectMeta
			checkLabels(t, o, v.Spec.Template.Labels)
		case *appsv1.StatefulSet:
			meta = &v.ObjectMeta
			checkLabels(t, o, v.Spec.Template.Labels)
		case *corev1.Secret:
			meta = &v.ObjectMeta
		case *policyv1.PodDisruptionBudget:
			meta = &v.ObjectMeta
		case *networkingv1.NetworkPolicy:
			meta = &v.ObjectMeta
		case *monitoringv1.ServiceMonitor:
			meta = &v.ObjectMeta
		case *monitoringv1.PodMonitor:
			meta = &v.ObjectMeta
		default:
			continue
		}
		for _, e := range validation.IsDNS1123Subdomain(meta.Name) {
			t.Errorf("%s: name: %s", o, e)
		}
		checkLabels(t, o, meta.Labels)
	}
}

func checkLabels(t testing.TB, o object, l map[string]string) {
	t.Helper()
	for k, v := range l {
		for _, e := range validation.IsQualifiedName(k) {
			t.Errorf("%s: label key %q: %s", o, k, e)
		}
		for _, e := range validation.IsValidLabelValue(v) {
			t.Errorf("%s: label %s value %q: %s", o, k, v, e)
		}
	}
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func checkNode(t testing.TB, n node, def defaults, envFlags map[string]string, objs []object) {
	t.Helper()
	where := fmt.Sprintf("%s: container %s", n.pod.owner, n.c.Name)

	// A native sidecar: an init container that keeps running.
	if n.init {
		if n.c.RestartPolicy == nil || *n.c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("%s: an init container running serve must have restartPolicy: Always (a native sidecar), or the pod never starts", where)
		}
	}

	// Environment: only real flags, no duplicates, $(VAR) defined before use.
	seen := map[string]bool{}
	fieldRefs := map[string]string{}
	for _, e := range n.c.Env {
		if seen[e.Name] {
			t.Errorf("%s: env %s set twice", where, e.Name)
		}
		for _, m := range envRef.FindAllStringSubmatch(e.Value, -1) {
			if !seen[m[1]] {
				t.Errorf("%s: env %s refers to $(%s), which is not defined before it (Kubernetes leaves it unexpanded)", where, e.Name, m[1])
			}
		}
		seen[e.Name] = true
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			fieldRefs[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
		if strings.HasPrefix(e.Name, "SWITCHYARD_") {
			if _, ok := envFlags[e.Name]; !ok {
				t.Errorf("%s: env %s is no `switchyard serve` flag (the binary ignores it)", where, e.Name)
			}
		}
		for _, msg := range validation.IsEnvVarName(e.Name) {
			t.Errorf("%s: env %s: %s", where, e.Name, msg)
		}
	}
	for name := range n.args {
		if _, ok := envFlags["SWITCHYARD_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))]; !ok {
			t.Errorf("%s: argument --%s is no `switchyard serve` flag", where, name)
		}
	}
	refersTo := func(flag, envVar, fieldPath string) {
		v, _ := n.flag(flag)
		if !strings.Contains(v, "$("+envVar+")") {
			t.Errorf("%s: --%s is %q; want it built from $(%s)", where, flag, v, envVar)
		} else if fieldRefs[envVar] != fieldPath {
			t.Errorf("%s: %s must come from the downward API field %s, not %q", where, envVar, fieldPath, fieldRefs[envVar])
		}
	}
	refersTo("advertise-url", "POD_IP", "status.podIP")
	refersTo("gossip-advertise", "POD_IP", "status.podIP")
	refersTo("node-name", "POD_NAME", "metadata.name")
	if v, _ := n.flag("advertise-url"); v != fmt.Sprintf("http://$(POD_IP):%d", def.httpPort) && v != fmt.Sprintf("https://$(POD_IP):%d", def.httpPort) {
		t.Errorf("%s: --advertise-url is %q; want http://$(POD_IP):%d", where, v, def.httpPort)
	}
	if v, _ := n.flag("gossip-advertise"); v != fmt.Sprintf("$(POD_IP):%d", def.gossipPort) {
		t.Errorf("%s: --gossip-advertise is %q; want $(POD_IP):%d", where, v, def.gossipPort)
	}

	// Listening: on every interface, on the default port, with API keys.
	listen, ok := n.flag("listen")
	if !ok {
		t.Errorf("%s: --listen not set: the default (loopback) is unreachable from other pods", where)
	} else {
		host, port, err := net.SplitHostPort(listen)
		if err != nil || (host != "0.0.0.0" && host != "" && host != "::") {
			t.Errorf("%s: --listen %q; want 0.0.0.0:%d", where, listen, def.httpPort)
		}
		if p, _ := strconv.Atoi(port); p != def.httpPort {
			t.Errorf("%s: --listen port %s; want the binary's default %d, which the Services, probes and policies use", where, port, def.httpPort)
		}
	}
	_, keys := n.flag("api-key")
	if _, k := n.env["SWITCHYARD_API_KEYS"]; k {
		keys = true
	}
	if _, k := n.flag("api-keys-file"); k {
		keys = true
	}
	if !keys {
		t.Errorf("%s: no API key (SWITCHYARD_API_KEYS): a non-loopback --listen refuses to start without one", where)
	}
	if v, ok := n.flag("gossip-key"); !ok || v != "<from>" {
		t.Errorf("%s: --gossip-key must come from a Secret (gossip is unencrypted without it)", where)
	}
	if v, ok := n.flag("gossip-bind"); !ok || v != fmt.Sprintf("0.0.0.0:%d", def.gossipPort) {
		t.Errorf("%s: --gossip-bind is %q; want 0.0.0.0:%d", where, v, def.gossipPort)
	}

	// Joining: through a headless Service rendered alongside.
	join, ok := n.flag("join")
	if !ok {
		t.Errorf("%s: no --join: the node stays alone", where)
	} else {
		for _, j := range strings.Split(join, ",") {
			host, port, err := net.SplitHostPort(strings.TrimSpace(j))
			if err != nil || port != strconv.Itoa(def.gossipPort) {
				t.Errorf("%s: --join %q; want <headless service>:%d", where, j, def.gossipPort)
				continue
			}
			svc := findService(objs, strings.SplitN(host, ".", 2)[0])
			if svc == nil {
				t.Errorf("%s: --join %q names no Service rendered alongside", where, j)
			} else if svc.Spec.ClusterIP != corev1.ClusterIPNone {
				t.Errorf("%s: --join %q: Service %s is not headless, so its name resolves to one virtual IP, not to every node", where, j, svc.Name)
			} else if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(n.pod.labels)) {
				t.Errorf("%s: --join %q: Service %s does not select this pod (its selector: %v)", where, j, svc.Name, svc.Spec.Selector)
			}
		}
	}

	// Ports.
	ports := map[string]corev1.ContainerPort{}
	var httpTCP, gossipTCP, gossipUDP bool
	for _, p := range n.c.Ports {
		for _, e := range validation.IsValidPortName(p.Name) {
			t.Errorf("%s: port name %q: %s", where, p.Name, e)
		}
		ports[p.Name] = p
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		switch {
		case int(p.ContainerPort) == def.httpPort && proto == corev1.ProtocolTCP:
			httpTCP = true
		case int(p.ContainerPort) == def.gossipPort && proto == corev1.ProtocolTCP:
			gossipTCP = true
		case int(p.ContainerPort) == def.gossipPort && proto == corev1.ProtocolUDP:
			gossipUDP = true
		}
	}
	if !httpTCP || !gossipTCP || !gossipUDP {
		t.Errorf("%s: ports must include %d/TCP, %d/TCP and %d/UDP (have http %v, gossip TCP %v, UDP %v)", where, def.httpPort, def.gossipPort, def.gossipPort, httpTCP, gossipTCP, gossipUDP)
	}

	// Probes: the binary's paths on its HTTP port.
	probe := func(kind string, p *corev1.Probe, path string, required bool) {
		if p == nil {
			if required {
				t.Errorf("%s: no %s probe", where, kind)
			}
			return
		}
		if p.HTTPGet == nil {
			t.Errorf("%s: %s probe is not an HTTP GET (the image has no shell for exec probes)", where, kind)
			return
		}
		if p.HTTPGet.Path != path {
			t.Errorf("%s: %s probe path %q; want %q", where, kind, p.HTTPGet.Path, path)
		}
		if port := resolvePort(p.HTTPGet.Port, n.c); port != def.httpPort {
			t.Errorf("%s: %s probe port %s resolves to %d; want %d", where, kind, p.HTTPGet.Port.String(), port, def.httpPort)
		}
	}
	probe("liveness", n.c.LivenessProbe, def.healthz, true)
	probe("readiness", n.c.ReadinessProbe, def.readyz, true)
	probe("startup", n.c.StartupProbe, def.healthz, false)

	// Shutdown: a preStop that works without a shell, and a grace period
	// longer than the preStop plus the drain.
	drain := def.drainTimeout
	if v, ok := n.flag("drain-timeout"); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Errorf("%s: --drain-timeout %q: %v", where, v, err)
		} else {
			drain = d
		}
	}
	var preStop time.Duration
	if n.c.Lifecycle != nil && n.c.Lifecycle.PreStop != nil {
		h := n.c.Lifecycle.PreStop
		switch {
		case h.Exec != nil:
			t.Errorf("%s: preStop exec cannot run: the image has no shell or sleep binary; use the sleep action", where)
		case h.Sleep != nil:
			preStop = time.Duration(h.Sleep.Seconds) * time.Second
		}
	}
	grace := 30 * time.Second
	if g := n.pod.spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace <= preStop+drain {
		t.Errorf("%s: terminationGracePeriodSeconds %v must exceed the preStop sleep %v plus the drain timeout %v, or the drain is killed", where, grace, preStop, drain)
	}

	// Resources: requests for scheduling, a memory limit, GOMEMLIMIT below it.
	res := n.c.Resources
	if res.Requests.Cpu().IsZero() || res.Requests.Memory().IsZero() {
		t.Errorf("%s: CPU and memory requests must be set", where)
	}
	limit := res.Limits.Memory()
	if limit.IsZero() {
		t.Errorf("%s: no memory limit", where)
	} else if limit.Cmp(*res.Requests.Memory()) < 0 {
		t.Errorf("%s: memory limit %s below the request %s", where, limit, res.Requests.Memory())
	}
	if v, ok := n.env["GOMEMLIMIT"]; ok && !limit.IsZero() {
		q, err := resource.ParseQuantity(strings.TrimSuffix(v, "B"))
		if err != nil {
			t.Errorf("%s: GOMEMLIMIT %q: %v", where, v, err)
		} else if q.Cmp(*limit) >= 0 {
			t.Errorf("%s: GOMEMLIMIT %s must stay below the memory limit %s", where, v, limit)
		}
	}

	// Hardening of the node container.
	sc := n.c.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("%s: no securityContext", where)
	default:
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation must be false", where)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: readOnlyRootFilesystem must be true", where)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", where)
		}
		if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: capabilities must drop ALL and add none", where)
		}
	}
}

// resolvePort turns a probe's or Service's port (number or name) into the
// container's port number; 0 when it does not resolve.
func resolvePort(p intstr.IntOrString, c *corev1.Container) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return 0
}

func findService(objs []object, name string) *corev1.Service {
	for _, s := range ofType[*corev1.Service](objs) {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// checkNonRoot: every container of every pod runs as a non-root user.
func checkNonRoot(t testing.TB, p pod) {
	t.Helper()
	psc := p.spec.SecurityContext
	for _, c := range append(append([]corev1.Container(nil), p.spec.InitContainers...), p.spec.Containers...) {
		nonRoot := psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
		var user *int64
		if psc != nil {
			user = psc.RunAsUser
		}
		if sc := c.SecurityContext; sc != nil {
			if sc.RunAsNonRoot != nil {
				nonRoot = *sc.RunAsNonRoot
			}
			if sc.RunAsUser != nil {
				user = sc.RunAsUser
			}
		}
		if !nonRoot {
			t.Errorf("%s: container %s: runAsNonRoot is not true", p.owner, c.Name)
		}
		if user != nil && *user == 0 {
			t.Errorf("%s: container %s: runAsUser 0", p.owner, c.Name)
		}
	}
}

// checkSecretRefs: every Secret a pod refers to is rendered alongside (or
// managed outside, as declared) and has the key.
func checkSecretRefs(t testing.TB, p pod, secrets map[string]map[string]bool) {
	t.Helper()
	ref := func(where, name, key string, optional *bool) {
		keys, ok := secrets[name]
		switch {
		case !ok:
			t.Errorf("%s: %s refers to Secret %q, which is not rendered alongside", p.owner, where, name)
		case keys == nil || key == "":
			// managed outside, or the whole Secret (envFrom)
		case !keys[key] && (optional == nil || !*optional):
			t.Errorf("%s: %s refers to key %q of Secret %q, which has no such key", p.owner, where, key, name)
		}
	}
	for _, c := range append(append([]corev1.Container(nil), p.spec.InitContainers...), p.spec.Containers...) {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				r := e.ValueFrom.SecretKeyRef
				ref(fmt.Sprintf("container %s env %s", c.Name, e.Name), r.Name, r.Key, r.Optional)
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				ref(fmt.Sprintf("container %s envFrom", c.Name), e.SecretRef.Name, "", e.SecretRef.Optional)
			}
		}
	}
	for _, v := range p.spec.Volumes {
		if v.Secret != nil {
			ref("volume "+v.Name, v.Secret.SecretName, "", v.Secret.Optional)
		}
	}
}

// checkGossipService: a headless Service, published before readiness, with
// the gossip port on TCP and UDP, selecting every node.
func checkGossipService(t testing.TB, objs []object, nodePods []pod, def defaults) {
	t.Helper()
	var found bool
	for _, s := range ofType[*corev1.Service](objs) {
		if s.Spec.ClusterIP != corev1.ClusterIPNone {
			continue
		}
		found = true
		if !s.Spec.PublishNotReadyAddresses {
			t.Errorf("Service %s: publishNotReadyAddresses must be true, so starting nodes find each other before they are ready", s.Name)
		}
		var tcp, udp bool
		for _, p := range s.Spec.Ports {
			if int(p.Port) != def.gossipPort {
				continue
			}
			if p.TargetPort.IntValue() != def.gossipPort && p.TargetPort.String() != "0" {
				t.Errorf("Service %s: gossip port targets %s; want %d", s.Name, p.TargetPort.String(), def.gossipPort)
			}
			switch p.Protocol {
			case corev1.ProtocolUDP:
				udp = true
			case corev1.ProtocolTCP, "":
				tcp = true
			}
		}
		if !tcp || !udp {
			t.Errorf("Service %s: gossip port %d must be open on TCP and UDP (TCP %v, UDP %v)", s.Name, def.gossipPort, tcp, udp)
		}
		sel := labels.SelectorFromSet(s.Spec.Selector)
		if len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s: no selector", s.Name)
		}
		for _, p := range nodePods {
			if !sel.Matches(labels.Set(p.labels)) {
				t.Errorf("Service %s does not select the pods of %s: they would not be found by the others", s.Name, p.owner)
			}
		}
	}
	if !found {
		t.Error("no headless Service for gossip")
	}
}

// checkHTTPService: ClusterIP Services reach the node's HTTP port.
func checkHTTPService(t testing.TB, objs []object, all []pod, want bool, def defaults) {
	t.Helper()
	var found bool
	for _, s := range ofType[*corev1.Service](objs) {
		if s.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		found = true
		sel := labels.SelectorFromSet(s.Spec.Selector)
		var selected []pod
		for _, p := range all {
			if len(s.Spec.Selector) > 0 && sel.Matches(labels.Set(p.labels)) {
				selected = append(selected, p)
			}
		}
		if len(selected) == 0 {
			t.Errorf("Service %s selects no rendered workload", s.Name)
		}
		for _, sp := range s.Spec.Ports {
			for _, p := range selected {
				for _, n := range nodesOf(p) {
					if got := resolvePort(sp.TargetPort, n.c); got != def.httpPort {
						t.Errorf("Service %s port %d targets %s, which is %d in %s; want %d", s.Name, sp.Port, sp.TargetPort.String(), got, p.owner, def.httpPort)
					}
				}
			}
		}
	}
	if want && !found {
		t.Error("no HTTP Service")
	}
}

type portProto struct {
	port  int
	proto corev1.Protocol
}

// checkNetworkPolicy: the policy selects every node; nodes may reach each
// other on HTTP and gossip (TCP and UDP); nothing else is opened but HTTP.
func checkNetworkPolicy(t testing.TB, objs []object, nodePods, all []pod, want bool, def defaults) {
	t.Helper()
	policies := ofType[*networkingv1.NetworkPolicy](objs)
	if want && len(policies) == 0 {
		t.Error("no NetworkPolicy")
	}
	httpP := portProto{def.httpPort, corev1.ProtocolTCP}
	gossipTCP := portProto{def.gossipPort, corev1.ProtocolTCP}
	gossipUDP := portProto{def.gossipPort, corev1.ProtocolUDP}
	for _, np := range policies {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			t.Errorf("NetworkPolicy %s: %v", np.Name, err)
			continue
		}
		for _, p := range nodePods {
			if !sel.Matches(labels.Set(p.labels)) {
				t.Errorf("NetworkPolicy %s does not select the nodes of %s", np.Name, p.owner)
			}
		}
		ingress := false
		for _, pt := range np.Spec.PolicyTypes {
			ingress = ingress || pt == networkingv1.PolicyTypeIngress
		}
		if !ingress {
			t.Errorf("NetworkPolicy %s: policyTypes must include Ingress", np.Name)
		}
		betweenNodes := map[portProto]bool{}
		for i, rule := range np.Spec.Ingress {
			if len(rule.Ports) == 0 {
				t.Errorf("NetworkPolicy %s: ingress rule %d has no ports, so it opens every port", np.Name, i)
			}
			if len(rule.From) == 0 {
				t.Errorf("NetworkPolicy %s: ingress rule %d has no from, so it admits everyone", np.Name, i)
			}
			var opened []portProto
			for _, p := range rule.Ports {
				if p.Port == nil || p.Port.Type != intstr.Int || p.EndPort != nil {
					t.Errorf("NetworkPolicy %s: rule %d: give ports as single numbers", np.Name, i)
					continue
				}
				proto := corev1.ProtocolTCP
				if p.Protocol != nil {
					proto = *p.Protocol
				}
				pp := portProto{p.Port.IntValue(), proto}
				if pp != httpP && pp != gossipTCP && pp != gossipUDP {
					t.Errorf("NetworkPolicy %s: rule %d opens %d/%s, which Switchyard does not use", np.Name, i, pp.port, pp.proto)
				}
				opened = append(opened, pp)
			}
			// Who does the rule admit? Only node pods may reach gossip.
			fromNodesOnly := len(rule.From) > 0
			for _, peer := range rule.From {
				if peer.NamespaceSelector != nil || peer.IPBlock != nil || peer.PodSelector == nil {
					fromNodesOnly = false
					continue
				}
				psel, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
				if err != nil {
					t.Errorf("NetworkPolicy %s: %v", np.Name, err)
					continue
				}
				// A peer admits only nodes when every pod it can match
				// carries the cluster label with the nodes' value.
				if v, ok := peer.PodSelector.MatchLabels[clusterLabel]; !ok || v != nodePods[0].labels[clusterLabel] {
					fromNodesOnly = false
				}
				for _, p := range nodePods {
					if psel.Matches(labels.Set(p.labels)) && fromNodesOnly {
						for _, pp := range opened {
							betweenNodes[pp] = true
						}
					}
				}
			}
			if !fromNodesOnly {
				for _, pp := range opened {
					if pp != httpP {
						t.Errorf("NetworkPolicy %s: rule %d opens %d/%s to pods that are not Switchyard nodes", np.Name, i, pp.port, pp.proto)
					}
				}
			}
		}
		for _, pp := range []portProto{httpP, gossipTCP, gossipUDP} {
			if !betweenNodes[pp] {
				t.Errorf("NetworkPolicy %s: nodes cannot reach each other on %d/%s", np.Name, pp.port, pp.proto)
			}
		}
	}
}

// checkPDBs: each budget covers a rendered workload, which has the
// replicas to honour it; every multi-replica workload running a node has
// a budget.
func checkPDBs(t testing.TB, objs []object, all []pod, want bool) {
	t.Helper()
	pdbs := ofType[*policyv1.PodDisruptionBudget](objs)
	if want && len(pdbs) == 0 {
		t.Error("no PodDisruptionBudget")
	}
	covered := map[string]int{}
	for _, b := range pdbs {
		sel, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
		if err != nil || sel.Empty() {
			t.Errorf("PodDisruptionBudget %s: selector %v (%v)", b.Name, b.Spec.Selector, err)
			continue
		}
		if b.Spec.MaxUnavailable == nil && b.Spec.MinAvailable == nil {
			t.Errorf("PodDisruptionBudget %s: neither maxUnavailable nor minAvailable", b.Name)
		}
		n := 0
		for _, p := range all {
			if sel.Matches(labels.Set(p.labels)) {
				n++
				covered[p.owner.name]++
				if p.replicas < 2 {
					t.Errorf("PodDisruptionBudget %s covers %s with %d replica(s): a drain needs a peer to hand participants to", b.Name, p.owner, p.replicas)
				}
			}
		}
		if n == 0 {
			t.Errorf("PodDisruptionBudget %s selects no rendered workload", b.Name)
		}
	}
	for _, p := range all {
		if covered[p.owner.name] > 1 {
			t.Errorf("%s is covered by %d PodDisruptionBudgets; the eviction API refuses pods with more than one", p.owner, covered[p.owner.name])
		}
		if want && covered[p.owner.name] == 0 && len(nodesOf(p)) > 0 {
			t.Errorf("%s runs Switchyard without a PodDisruptionBudget", p.owner)
		}
	}
}

// checkMonitors: Prometheus monitors scrape the HTTP port by a name that
// exists where they look.
func checkMonitors(t testing.TB, objs []object, all []pod) {
	t.Helper()
	for _, sm := range ofType[*monitoringv1.ServiceMonitor](objs) {
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			t.Error(err)
			continue
		}
		var svcs []*corev1.Service
		for _, s := range ofType[*corev1.Service](objs) {
			if sel.Matches(labels.Set(s.Labels)) {
				svcs = append(svcs, s)
			}
		}
		if len(svcs) == 0 {
			t.Errorf("ServiceMonitor %s selects no rendered Service", sm.Name)
		}
		for _, ep := range sm.Spec.Endpoints {
			if ep.Path != "/metrics" {
				t.Errorf("ServiceMonitor %s: path %q; want /metrics", sm.Name, ep.Path)
			}
			for _, s := range svcs {
				ok := false
				for _, p := range s.Spec.Ports {
					ok = ok || p.Name == ep.Port
				}
				if !ok {
					t.Errorf("ServiceMonitor %s: Service %s has no port named %q", sm.Name, s.Name, ep.Port)
				}
			}
		}
	}
	for _, pm := range ofType[*monitoringv1.PodMonitor](objs) {
		sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
		if err != nil {
			t.Error(err)
			continue
		}
		n := 0
		for _, p := range all {
			if !sel.Matches(labels.Set(p.labels)) {
				continue
			}
			n++
			for _, ep := range pm.Spec.PodMetricsEndpoints {
				if ep.Path != "/metrics" || ep.Port == nil {
					t.Errorf("PodMonitor %s: want port http and path /metrics", pm.Name)
					continue
				}
				ok := false
				for _, nd := range nodesOf(p) {
					for _, cp := range nd.c.Ports {
						ok = ok || cp.Name == *ep.Port
					}
				}
				if !ok {
					t.Errorf("PodMonitor %s: the Switchyard container of %s has no port named %q", pm.Name, p.owner, *ep.Port)
				}
			}
		}
		if n == 0 {
			t.Errorf("PodMonitor %s selects no rendered workload", pm.Name)
		}
	}
}

// validGossipKey is membership.ParseGossipKey's rule.
func validGossipKey(s string) bool {
	b, err := base64.StdEncoding.DecodeString(s)
	return err == nil && (len(b) == 16 || len(b) == 24 || len(b) == 32)
}
