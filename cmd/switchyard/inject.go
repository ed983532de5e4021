package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
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

// injectedLabel marks pods that carry the sidecar; the gossip Service
// selects them.
const injectedLabel = "switchyard.io/sidecar"

func injectCommand(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("inject", flag.ContinueOnError)
	in := fs.String("f", "-", "manifest file to read (- for stdin); several YAML documents are fine")
	out := fs.String("o", "-", "file to write (- for stdout)")
	opts := injectOptions{}
	fs.StringVar(&opts.Image, "image", "ghcr.io/switchyard-gw/switchyard:"+versionString(), "sidecar image")
	fs.StringVar(&opts.SecretName, "secret-name", "switchyard", "Secret with api-keys, gossip-key and token-secret")
	fs.StringVar(&opts.GossipService, "gossip-service", "switchyard-gossip", "headless Service that gossip joins through")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
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
	result, err := inject(src, opts)
	if err != nil {
		return err
	}
	if *out == "-" {
		_, err = stdout.Write(result)
		return err
	}
	return os.WriteFile(*out, result, 0o644)
}

// inject adds the sidecar to every Deployment, StatefulSet and DaemonSet in
// the YAML stream and leaves the other documents as they are. A workload
// that already has it is left unchanged, so injecting twice changes nothing.
func inject(src io.Reader, opts injectOptions) ([]byte, error) {
	sidecar, err := sidecarNode(opts)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(src)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for i := 1; ; i++ {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(doc.Content) == 0 {
			continue
		}
		if err := injectDoc(doc.Content[0], sidecar, opts.SecretName); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if err := enc.Encode(&doc); err != nil {
			return nil, err
		}
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
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

func injectDoc(root *yaml.Node, sidecar *yaml.Node, secretName string) error {
	if root.Kind != yaml.MappingNode {
		return nil
	}
	switch scalar(get(root, "kind")) {
	case "Deployment", "StatefulSet", "DaemonSet":
	default:
		return nil
	}
	tmpl := get(get(root, "spec"), "template")
	if tmpl == nil {
		return fmt.Errorf("a %s without spec.template", scalar(get(root, "kind")))
	}
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
	inits.Content = append(inits.Content, clone(sidecar))
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
			addAgentEnv(c, secretName)
		}
	}
	return nil
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
