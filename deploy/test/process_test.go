package deploytest

// The environment the chart renders, run by the real binary: two nodes on
// loopback with the chart's variables (the generated secrets, drain
// timeout, GOMEMLIMIT, log settings) start, form a cluster encrypted with
// the generated gossip key, and drain on SIGTERM within the grace period.
// Only the network addresses are moved to free loopback ports.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildBinary builds the switchyard binary once, as `make build` does (so
// the build cache of CI's `make build` serves it).
func buildBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "switchyard-deploy-test"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "switchyard")
		cmd := exec.Command("go", "build", "-trimpath", "-o", binPath, "./cmd/switchyard")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// freePort returns a loopback port free on TCP and UDP (for gossip).
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// containerEnv resolves a container's environment as the kubelet would:
// Secret references from the rendered Secret, the downward API from pod,
// $(VAR) from the variables defined before.
func containerEnv(t *testing.T, c corev1.Container, secret *corev1.Secret, fields map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = envRef.ReplaceAllStringFunc(e.Value, func(ref string) string {
				if v, ok := env[ref[2:len(ref)-1]]; ok {
					return v
				}
				return ref
			})
		case e.ValueFrom.SecretKeyRef != nil:
			r := e.ValueFrom.SecretKeyRef
			if r.Name != secret.Name {
				t.Fatalf("env %s refers to Secret %s, not the rendered %s", e.Name, r.Name, secret.Name)
			}
			v, ok := secret.Data[r.Key]
			if !ok && (r.Optional == nil || !*r.Optional) {
				t.Fatalf("env %s: Secret %s has no key %s", e.Name, secret.Name, r.Key)
			}
			if ok {
				env[e.Name] = string(v)
			}
		case e.ValueFrom.FieldRef != nil:
			v, ok := fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("env %s: downward API field %s not simulated", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		default:
			t.Fatalf("env %s: source not simulated", e.Name)
		}
	}
	return env
}

type runningNode struct {
	name, url string
	cmd       *exec.Cmd
	log       *syncBuffer
	done      chan error
}

// syncBuffer is a log that the process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRenderedEnvironmentRunsACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	rel := renderHelm(t, map[string]any{"flags": map[string]any{"mailbox-size": 2048}})
	var dep *appsv1.Deployment
	var secret *corev1.Secret
	for _, o := range rel.objects {
		switch v := o.obj.(type) {
		case *appsv1.Deployment:
			dep = v
		case *corev1.Secret:
			secret = v
		}
	}
	if dep == nil || secret == nil {
		t.Fatal("want the edge Deployment and the Secret")
	}
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	apiKey := strings.Split(string(secret.Data["api-keys"]), ",")[0]
	bin := buildBinary(t)

	var nodes []*runningNode
	t.Cleanup(func() {
		for _, n := range nodes {
			if n.cmd.ProcessState == nil {
				_ = n.cmd.Process.Kill()
				<-n.done
			}
		}
	})
	var seed string
	for i := range 2 {
		name := fmt.Sprintf("sy-switchyard-%d", i)
		env := containerEnv(t, c, secret, map[string]string{"metadata.name": name, "status.podIP": "127.0.0.1"})
		if env["SWITCHYARD_NODE_NAME"] != name || env["SWITCHYARD_ADVERTISE_URL"] != "http://127.0.0.1:8787" {
			t.Fatalf("$(POD_NAME) and $(POD_IP) not expanded: %v", env)
		}
		// The addresses move to free loopback ports; the rest is as rendered.
		httpPort, gossipPort := freePort(t), freePort(t)
		env["SWITCHYARD_LISTEN"] = fmt.Sprintf("127.0.0.1:%d", httpPort)
		env["SWITCHYARD_ADVERTISE_URL"] = fmt.Sprintf("http://127.0.0.1:%d", httpPort)
		env["SWITCHYARD_GOSSIP_BIND"] = fmt.Sprintf("127.0.0.1:%d", gossipPort)
		env["SWITCHYARD_GOSSIP_ADVERTISE"] = env["SWITCHYARD_GOSSIP_BIND"]
		env["SWITCHYARD_JOIN"] = seed
		if seed == "" {
			delete(env, "SWITCHYARD_JOIN")
			seed = env["SWITCHYARD_GOSSIP_BIND"]
		}
		cmd := exec.Command(bin, c.Args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		n := &runningNode{name: name, url: env["SWITCHYARD_ADVERTISE_URL"], cmd: cmd, log: &syncBuffer{}, done: make(chan error, 1)}
		cmd.Stdout, cmd.Stderr = n.log, n.log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { n.done <- cmd.Wait() }()
		nodes = append(nodes, n)
	}
	client := &http.Client{Timeout: 2 * time.Second}
	get := func(n *runningNode, path string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodGet, n.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, n := range nodes {
		for {
			if code, _ := get(n, "/readyz"); code == http.StatusOK {
				break
			}
			select {
			case err := <-n.done:
				t.Fatalf("%s exited: %v\n%s", n.name, err, n.log)
			case <-ctx.Done():
				t.Fatalf("%s not ready\n%s", n.name, n.log)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	// Both see both, alive: gossip works with the generated key.
	for {
		code, body := get(nodes[0], "/v1/gateway/members")
		var m struct {
			Members []struct{ Name, State string }
		}
		_ = json.Unmarshal(body, &m)
		alive := 0
		for _, mem := range m.Members {
			if mem.State == "alive" && strings.HasPrefix(mem.Name, "sy-switchyard-") {
				alive++
			}
		}
		if code == http.StatusOK && alive == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no cluster of two: %d %s\n%s\n%s", code, body, nodes[0].log, nodes[1].log)
		case <-time.After(100 * time.Millisecond):
		}
	}
	// SIGTERM drains and exits 0 within what the grace period leaves after
	// the preStop sleep.
	for _, n := range nodes {
		start := time.Now()
		if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-n.done:
			if err != nil {
				t.Errorf("%s: exit after SIGTERM: %v\n%s", n.name, err, n.log)
			}
			t.Logf("%s drained in %v", n.name, time.Since(start).Round(time.Millisecond))
		case <-time.After(grace - preStop):
			t.Fatalf("%s still running %v after SIGTERM (grace period %v, preStop %v)\n%s", n.name, grace-preStop, grace, preStop, n.log)
		}
		for _, want := range []string{`"msg":"serving"`, `"node":"` + n.name + `"`, `"msg":"stopped"`} {
			if !strings.Contains(n.log.String(), want) {
				t.Errorf("%s: the log lacks %s:\n%s", n.name, want, n.log)
			}
		}
		if strings.Contains(n.log.String(), apiKey) {
			t.Errorf("%s logged the API key", n.name)
		}
	}
}
