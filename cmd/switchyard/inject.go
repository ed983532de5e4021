package main

import (
	"bytes"
	"errors"
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
  - name: SWITCHYARD_LOG_FORMAT
    value: json
  - name: SWITCHYARD_API_KEYS
    valueFrom: {secretKeyRef: {name: {{.SecretName}}, key: api-keys}}
  - name: SWITCHYARD_GOSSIP_KEY
    valueFrom: {secretKeyRef: {name: {{.SecretName}}, key: gossip-key}}
  - name: SWITCHYARD_TOKEN_SECRET
    valueFrom: {secretKeyRef: {name: {{.SecretName}}, key: token-secret, optional: true}}
  - name: GOMAXPROCS # one agent needs one core at most; fewer idle threads to wake
    value: "1"
ports:
  - {name: switchyard, containerPort: 8787, protocol: TCP}
  - {name: gossip-tcp, containerPort: 7946, protocol: TCP}
  - {name: gossip-udp, containerPort: 7946, protocol: UDP}
readinessProbe:
  httpGet: {path: /readyz, port: 8787}
  periodSeconds: 5
livenessProbe:
  httpGet: {path: /healthz, port: 8787}
  periodSeconds: 10
resources:
  requests: {cpu: 50m, memory: 64Mi}
  limits: {memory: 512Mi}
securityContext:
  runAsNonRoot: true
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  capabilities: {drop: [ALL]}
`

// injectedLabel marks pods that carry the sidecar; the gossip Service
// selects them.
const injectedLabel = "switchyard.io/sidecar"

// minGracePeriod exceeds the default --drain-timeout (10s) with room for
// the hand-off.
const minGracePeriod = 15

func injectCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("inject")
	in := fs.String("f", "-", "manifest file to read (- for stdin); several YAML documents are fine")
	out := fs.String("o", "-", "file to write (- for stdout)")
	opts := injectOptions{}
	fs.StringVar(&opts.Image, "image", "ghcr.io/switchyard-gw/switchyard:"+versionString(), "sidecar image")
	fs.StringVar(&opts.SecretName, "secret-name", "switchyard", "Secret with api-keys, gossip-key and token-secret")
	fs.StringVar(&opts.GossipService, "gossip-service", "switchyard-gossip", "headless Service that gossip joins through")
	cmd := command{name: "inject", synopsis: "-f agent.yaml [flags]",
		about: `
Adds the Switchyard sidecar to the Deployments, StatefulSets and DaemonSets
of a manifest.`}
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
		if err := injectDoc(doc.Content[0], sidecar); err != nil {
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
	if err := template.Must(template.New("sidecar").Parse(sidecarTemplate)).Execute(&text, opts); err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text.String()), &doc); err != nil {
		return nil, fmt.Errorf("the sidecar template: %w", err)
	}
	return doc.Content[0], nil
}

func injectDoc(root *yaml.Node, sidecar *yaml.Node) error {
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
	if grace := get(pod, "terminationGracePeriodSeconds"); grace != nil {
		var secs int
		if err := grace.Decode(&secs); err == nil && secs < minGracePeriod {
			grace.Value = fmt.Sprint(minGracePeriod) // the drain needs the time
		}
	}
	return nil
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
