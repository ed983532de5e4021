package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/template"

	"go.yaml.in/yaml/v3"
)

// injectOptions say what the injected sidecar looks like.
type injectOptions struct {
	Image         string
	SecretName    string
	GossipService string
}

// The sidecar's fixed settings, which the template and the pod settings
// inject adjusts must agree on.
const (
	sidecarMemoryLimitMiB = 512
	// sidecarPreStopSeconds: the preStop sleep before SIGTERM.
	sidecarPreStopSeconds = 5
	// sidecarDrainSeconds: --drain-timeout.
	sidecarDrainSeconds = 10
	// graceMarginSeconds: left for the agent's own shutdown (the kubelet
	// stops the sidecar only after the agent has exited; both come out of
	// terminationGracePeriodSeconds) and for the process to exit.
	graceMarginSeconds = 5
	// minGracePeriod is the shortest terminationGracePeriodSeconds the
	// sidecar's preStop and drain fit in; inject raises shorter ones.
	minGracePeriod = sidecarPreStopSeconds + sidecarDrainSeconds + graceMarginSeconds
	// sidecarURL is where the agent containers reach their sidecar.
	sidecarURL = "http://127.0.0.1:8787"
)

// templateData is what sidecarTemplate is executed with.
type templateData struct {
	injectOptions
	DrainSeconds, PreStopSeconds, MemoryLimitMiB, GoMemLimitMiB int
}

// sidecarTemplate is the container `switchyard inject` adds: a native
// sidecar (an init container that keeps running), so it starts before the
// agent and stops after it.
const sidecarTemplate = `name: switchyard
image: {{.Image}}
restartPolicy: Always
args: ["serve"]
env:
  - name: POD_NAME
    valueFrom: {fieldRef: {fieldPath: metadata.name}}
  - name: POD_IP
    valueFrom: {fieldRef: {fieldPath: status.podIP}}
  - name: SWITCHYARD_LISTEN
    value: "0.0.0.0:8787"
  - name: SWITCHYARD_NODE_NAME
    value: "$(POD_NAME)"
  - name: SWITCHYARD_ADVERTISE_URL
    value: "http://$(POD_IP):8787"
  - name: SWITCHYARD_GOSSIP_BIND
    value: "0.0.0.0:7946"
  - name: SWITCHYARD_GOSSIP_ADVERTISE
    value: "$(POD_IP):7946"
  - name: SWITCHYARD_JOIN
    value: "{{.GossipService}}:7946"
  - name: SWITCHYARD_DRAIN_TIMEOUT
    value: "{{.DrainSeconds}}s"
  - name: SWITCHYARD_LOG_FORMAT
    value: json
  - name: SWITCHYARD_API_KEYS
    valueFrom: {secretKeyRef: {name: {{.SecretName}}, key: api-keys}}
  - name: SWITCHYARD_GOSSIP_KEY
    valueFrom: {secretKeyRef: {name: {{.SecretName}}, key: gossip-key}}
  - name: SWITCHYARD_TOKEN_SECRET
    valueFrom: {secretKeyRef: {name: {{.SecretName}}, key: token-secret, optional: true}}
  - name: GOMEMLIMIT # 90% of the memory limit below: Go collects harder before the kernel kills
    value: "{{.GoMemLimitMiB}}MiB"
  - name: GOMAXPROCS # one agent needs one core at most; fewer idle threads to wake
    value: "1"
ports:
  - {name: switchyard, containerPort: 8787, protocol: TCP}
  - {name: gossip-tcp, containerPort: 7946, protocol: TCP}
  - {name: gossip-udp, containerPort: 7946, protocol: UDP}
# The agent containers start only once this passes (native sidecars start
# in order). /healthz answers as soon as the sidecar serves its API, which is
# what the agent needs; /readyz also waits for the node to settle in the
# cluster and would hold the agent back for nothing.
startupProbe:
  httpGet: {path: /healthz, port: 8787}
  periodSeconds: 1
  failureThreshold: 30
readinessProbe:
  httpGet: {path: /readyz, port: 8787}
  periodSeconds: 5
livenessProbe:
  httpGet: {path: /healthz, port: 8787}
  periodSeconds: 10
# Endpoints stop sending before SIGTERM starts the drain (the kubelet's
# sleep action: the image has no shell).
lifecycle:
  preStop:
    sleep: {seconds: {{.PreStopSeconds}}}
resources:
  requests: {cpu: 50m, memory: 64Mi}
  limits: {memory: {{.MemoryLimitMiB}}Mi}
securityContext:
  runAsNonRoot: true
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  capabilities: {drop: [ALL]}
`

// release is the Switchyard release this tree is: the Makefile's RELEASE,
// the kustomize base's image tag and the chart's appVersion (the deploy
// tests keep them equal).
const release = "0.1.0"

// defaultImage is the image `make image` built for this binary: tagged with
// the version `make build` stamped, else the release (a plain go build has
// no version, or a module pseudo-version that is no image tag; "dev" is the
// Dockerfile's placeholder).
func defaultImage() string {
	tag := release
	if version != "" && version != "dev" {
		tag = version
	}
	return "ghcr.io/switchyard-gw/switchyard:" + tag
}

// injectedLabel marks pods that carry the sidecar; the gossip Service
// selects them.
const injectedLabel = "switchyard.io/sidecar"

func injectCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("inject")
	in := fs.String("f", "-", "manifest file to read (- for stdin); several YAML documents are fine")
	out := fs.String("o", "-", "file to write (- for stdout)")
	opts := injectOptions{}
	fs.StringVar(&opts.Image, "image", defaultImage(), "sidecar image")
	fs.StringVar(&opts.SecretName, "secret-name", "switchyard", "Secret with api-keys, gossip-key and token-secret")
	fs.StringVar(&opts.GossipService, "gossip-service", "switchyard-gossip", "headless Service that gossip joins through")
	cmd := command{name: "inject", synopsis: "-f agent.yaml [flags]",
		// Without the hint, `switchyard inject agent.yaml` reads as a typo.
		argHint: "give the manifest with -f: switchyard inject -f %s",
		about: `
Adds the Switchyard sidecar to the workloads of a manifest: Deployments,
StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs and Pods.`}
	if err := cmd.parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	var src io.Reader = stdin
	if *in != "-" {
		f, err := os.Open(*in)
		if err != nil {
			return fmt.Errorf("read -f: %w", err)
		}
		defer f.Close()
		src = f
	}
	result, warnings, err := inject(src, opts)
	for _, w := range warnings {
		fmt.Fprintln(stderr, "switchyard inject: WARNING:", w)
	}
	if err != nil {
		return err
	}
	if *out == "-" {
		_, err = stdout.Write(result)
		return err
	}
	return os.WriteFile(*out, result, 0o644)
}

// helmSyntax finds what only a Helm template (not a rendered manifest) has:
// an action naming the chart's objects or Helm's own functions. Other Go
// templates inside values (an Alertmanager template's {{ range .Alerts }},
// an alert's {{ $labels.x }}) are not one.
var helmSyntax = regexp.MustCompile(`\{\{[^}]*(?:\.Values|\.Release|\.Chart|\.Capabilities|\.Files|\binclude\b|\btoYaml\b|\bnindent\b|\btpl\b|\brequired\b)`)

// injectable are the kinds inject adds the sidecar to.
const injectable = "Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob, Pod"

// inject adds the sidecar to every workload in the YAML stream (see
// injectable; the items of a List too) and leaves the other documents as
// they are. A workload that already has it is left unchanged, so injecting
// twice changes nothing. The warnings say what the user must know: the
// agent ports the NetworkPolicy closes.
func inject(src io.Reader, opts injectOptions) ([]byte, []string, error) {
	sidecar, err := sidecarNode(opts)
	if err != nil {
		return nil, nil, err
	}
	text, err := io.ReadAll(src)
	if err != nil {
		return nil, nil, err
	}
	for i, line := range strings.Split(string(text), "\n") {
		if helmSyntax.MatchString(line) {
			return nil, nil, fmt.Errorf("line %d: %q is Helm template syntax; inject reads rendered manifests: helm template RELEASE CHART | switchyard inject", i+1, strings.TrimSpace(line))
		}
	}
	st := &injectState{sidecar: sidecar, secretName: opts.SecretName}
	dec := yaml.NewDecoder(bytes.NewReader(text))
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for i := 1; ; i++ {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			if bytes.Contains(text, []byte("{{")) {
				return nil, nil, fmt.Errorf("document %d: %w (a template? inject reads rendered manifests: helm template RELEASE CHART | switchyard inject)", i, err)
			}
			return nil, nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(doc.Content) == 0 {
			continue
		}
		if err := st.injectDoc(doc.Content[0]); err != nil {
			return nil, nil, fmt.Errorf("document %d: %w", i, err)
		}
		if err := enc.Encode(&doc); err != nil {
			return nil, nil, err
		}
	}
	if err := enc.Close(); err != nil {
		return nil, nil, err
	}
	if st.workloads == 0 {
		return nil, st.warnings, fmt.Errorf("no workload to inject: found no %s", injectable)
	}
	return buf.Bytes(), st.warnings, nil
}

// injectState is what inject learns along the stream.
type injectState struct {
	sidecar    *yaml.Node
	secretName string
	workloads  int // given the sidecar, or found with it
	warnings   []string
}

func sidecarNode(opts injectOptions) (*yaml.Node, error) {
	var text strings.Builder
	data := templateData{
		injectOptions:  opts,
		DrainSeconds:   sidecarDrainSeconds,
		PreStopSeconds: sidecarPreStopSeconds,
		MemoryLimitMiB: sidecarMemoryLimitMiB,
		GoMemLimitMiB:  sidecarMemoryLimitMiB * 9 / 10,
	}
	if err := template.Must(template.New("sidecar").Parse(sidecarTemplate)).Execute(&text, data); err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text.String()), &doc); err != nil {
		return nil, fmt.Errorf("the sidecar template: %w", err)
	}
	return doc.Content[0], nil
}

func (st *injectState) injectDoc(root *yaml.Node) error {
	if root.Kind != yaml.MappingNode {
		return nil
	}
	kind := scalar(get(root, "kind"))
	var tmpl *yaml.Node
	switch kind {
	case "List": // kubectl get -o yaml
		if items := get(root, "items"); items != nil {
			for i, item := range items.Content {
				if err := st.injectDoc(item); err != nil {
					return fmt.Errorf("item %d: %w", i, err)
				}
			}
		}
		return nil
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job":
		if tmpl = get(get(root, "spec"), "template"); tmpl == nil {
			return fmt.Errorf("a %s without spec.template", kind)
		}
	case "CronJob":
		if tmpl = get(get(get(get(root, "spec"), "jobTemplate"), "spec"), "template"); tmpl == nil {
			return fmt.Errorf("a CronJob without spec.jobTemplate.spec.template")
		}
	case "Pod":
		tmpl = root
	default:
		return nil
	}
	st.workloads++
	workload := kind + "/" + scalar(get(get(root, "metadata"), "name"))
	pod := ensureMap(tmpl, "spec")
	inits := get(pod, "initContainers")
	if inits != nil {
		for _, c := range inits.Content {
			if scalar(get(c, "name")) == "switchyard" {
				return nil // already injected
			}
		}
	} else {
		inits = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		set(pod, "initContainers", inits)
	}
	st.warnClosedPorts(workload, pod)
	inits.Content = append(inits.Content, clone(st.sidecar))
	labels := ensureMap(ensureMap(tmpl, "metadata"), "labels")
	set(labels, injectedLabel, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "injected", Style: yaml.DoubleQuotedStyle})
	// Unset, the grace period is 30s, which the preStop and drain fit in.
	if grace := get(pod, "terminationGracePeriodSeconds"); grace != nil {
		var secs int
		if err := grace.Decode(&secs); err == nil && secs < minGracePeriod {
			grace.Value = fmt.Sprint(minGracePeriod) // the drain needs the time
		}
	}
	if containers := get(pod, "containers"); containers != nil {
		for _, c := range containers.Content {
			addAgentEnv(c, st.secretName)
		}
	}
	return nil
}

// warnClosedPorts names the ports the pod's containers declare: the
// Switchyard NetworkPolicy selects every pod with the sidecar's label and
// admits only Switchyard's own ports, so these stop being reachable unless
// a policy of the user's opens them. Inject does not open them itself: it
// cannot know from whom they should be reachable, nor which policies the
// namespace already has.
func (st *injectState) warnClosedPorts(workload string, pod *yaml.Node) {
	if b, _ := strconv.ParseBool(scalar(get(pod, "hostNetwork"))); b {
		return // NetworkPolicies do not apply to host-network pods
	}
	var closed []string
	for _, list := range []string{"initContainers", "containers"} {
		cs := get(pod, list)
		if cs == nil {
			continue
		}
		for _, c := range cs.Content {
			if list == "initContainers" && scalar(get(c, "restartPolicy")) != "Always" {
				continue // a plain init container serves nobody
			}
			ports := get(c, "ports")
			if ports == nil {
				continue
			}
			for _, p := range ports.Content {
				proto := scalar(get(p, "protocol"))
				if proto == "" {
					proto = "TCP"
				}
				desc := scalar(get(p, "containerPort")) + "/" + proto + " (" + scalar(get(c, "name"))
				if name := scalar(get(p, "name")); name != "" {
					desc += " " + name
				}
				closed = append(closed, desc+")")
			}
		}
	}
	if len(closed) > 0 {
		st.warnings = append(st.warnings, fmt.Sprintf(
			"%s: the Switchyard NetworkPolicy selects its pods (label %s) and closes their own ports %s: "+
				"open them with a NetworkPolicy of your own (docs/OPERATIONS.md, \"The agents' own ports\")",
			workload, injectedLabel, strings.Join(closed, ", ")))
	}
}

// addAgentEnv tells an agent container where its sidecar is and gives it
// the API key, unless it sets those variables itself.
func addAgentEnv(c *yaml.Node, secretName string) {
	if c.Kind != yaml.MappingNode {
		return
	}
	env := get(c, "env")
	if env == nil || env.Kind != yaml.SequenceNode {
		env = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		set(c, "env", env)
	}
	has := func(name string) bool {
		for _, e := range env.Content {
			if scalar(get(e, "name")) == name {
				return true
			}
		}
		return false
	}
	if !has("SWITCHYARD_URL") {
		env.Content = append(env.Content, mustNode(fmt.Sprintf("{name: SWITCHYARD_URL, value: %q}", sidecarURL)))
	}
	if !has("SWITCHYARD_API_KEY") {
		env.Content = append(env.Content, mustNode(fmt.Sprintf(
			"{name: SWITCHYARD_API_KEY, valueFrom: {secretKeyRef: {name: %s, key: api-keys}}}", secretName)))
	}
}

func mustNode(text string) *yaml.Node {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		panic(err)
	}
	return doc.Content[0]
}

// YAML node helpers.

func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func set(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}

func ensureMap(m *yaml.Node, key string) *yaml.Node {
	if v := get(m, key); v != nil && v.Kind == yaml.MappingNode {
		return v
	}
	v := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	set(m, key, v)
	return v
}

func scalar(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	return n.Value
}

func clone(n *yaml.Node) *yaml.Node {
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, x := range n.Content {
		c.Content[i] = clone(x)
	}
	return &c
}
