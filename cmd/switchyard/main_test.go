package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchyard-gw/switchyard/internal/testkit"
	"github.com/switchyard-gw/switchyard/sidecar"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestFlagsWinOverEnvironmentWhichFillsTheRest(t *testing.T) {
	t.Setenv("SWITCHYARD_LISTEN", "127.0.0.1:9999")
	t.Setenv("SWITCHYARD_MAILBOX_SIZE", "77")
	t.Setenv("SWITCHYARD_MAILBOX_TTL", "3m")
	t.Setenv("SWITCHYARD_API_KEY", "k1, k2")
	fs, f := newServeFlags()
	require.NoError(t, parseWithEnv(fs, []string{"--listen", "127.0.0.1:1234"}))
	assert.Equal(t, "127.0.0.1:1234", f.listen, "a flag beats the environment")
	assert.Equal(t, 77, f.mailboxSize)
	assert.Equal(t, 3*time.Minute, f.mailboxTTL)
	assert.Equal(t, []string{"k1", "k2"}, []string(f.apiKeys), "lists come comma-separated")
}

func TestBadEnvironmentValueNamesTheVariable(t *testing.T) {
	t.Setenv("SWITCHYARD_MAILBOX_SIZE", "lots")
	fs, _ := newServeFlags()
	err := parseWithEnv(fs, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "SWITCHYARD_MAILBOX_SIZE")
}

func TestEveryServeFlagHasAnEnvironmentName(t *testing.T) {
	fs, _ := newServeFlags()
	fs.VisitAll(func(f *flag.Flag) {
		assert.Regexp(t, `^SWITCHYARD_[A-Z_]+$`, envName(f.Name))
	})
	assert.Equal(t, "SWITCHYARD_MAX_BODY_BYTES", envName("max-body-bytes"))
}

func TestServeRefusesOpenListenWithoutKey(t *testing.T) {
	var stderr bytes.Buffer
	code := run([]string{"serve", "--listen", "0.0.0.0:0"}, strings.NewReader(""), &bytes.Buffer{}, &stderr)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr.String(), "--api-key")
	assert.Contains(t, stderr.String(), "--insecure")
}

func TestReadKeysFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(path, []byte("# team keys\nalpha\n\n  beta  \n"), 0o600))
	keys, err := readKeysFile(path)
	require.NoError(t, err)
	assert.Equal(t, []string{"alpha", "beta"}, keys)
	_, err = readKeysFile(filepath.Join(t.TempDir(), "missing"))
	assert.ErrorContains(t, err, "--api-keys-file")
}

func TestUsageErrors(t *testing.T) {
	var stderr bytes.Buffer
	assert.Equal(t, 2, run(nil, nil, &bytes.Buffer{}, &stderr))
	assert.Equal(t, 2, run([]string{"teleport"}, nil, &bytes.Buffer{}, &stderr))
	assert.Equal(t, 2, run([]string{"serve", "--log-level", "loud"}, nil, &bytes.Buffer{}, &stderr))
	assert.Equal(t, 2, run([]string{"listen"}, nil, &bytes.Buffer{}, &stderr), "listen needs --participant-id")
	assert.Equal(t, 2, run([]string{"send"}, strings.NewReader(""), &bytes.Buffer{}, &stderr), "send needs an event")
	var stdout bytes.Buffer
	assert.Equal(t, 0, run([]string{"version"}, nil, &stdout, &stderr))
	assert.NotEmpty(t, strings.TrimSpace(stdout.String()))
}

// startNode starts an in-process node on a free loopback port with cfg
// (logs discarded unless SWITCHYARD_TEST_LOGS is set); it is shut down when
// the test ends.
func startNode(t *testing.T, cfg sidecar.Config) *sidecar.Node {
	t.Helper()
	cfg.Listen, cfg.Logger = "127.0.0.1:0", testkit.Logger()
	node, err := sidecar.New(cfg)
	require.NoError(t, err)
	testkit.Start(t, node)
	return node
}

func TestSendAndListenAgainstANode(t *testing.T) {
	node := startNode(t, sidecar.Config{APIKeys: []string{"secret"}})
	t.Setenv("SWITCHYARD_API_KEY", "secret")
	t.Setenv("SWITCHYARD_URL", node.URL())

	var out syncBuffer
	done := make(chan int)
	go func() {
		done <- run([]string{"listen", "--participant-id", "bob", "--session-id", "s1", "--count", "2"}, nil, &out, &bytes.Buffer{})
	}()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), `"type":"welcome"`) },
		5*time.Second, 10*time.Millisecond)

	var stdout, stderr bytes.Buffer
	code := run([]string{"send", "--sender-id", "alice", "--session-id", "s1", "--message", "by flags"}, nil, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	assert.Contains(t, stdout.String(), `"status":"ok"`)

	stdin := strings.NewReader(`{"sender_id":"alice","sender_type":"human","event_type":"message","message":"by stdin","session_id":"s1"}`)
	require.Equal(t, 0, run([]string{"send"}, stdin, &stdout, &stderr), stderr.String())

	select {
	case code := <-done:
		assert.Equal(t, 0, code)
	case <-time.After(10 * time.Second):
		t.Fatal("listen did not exit after two events")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 3)
	assert.Contains(t, lines[1], `"seq":1,`)
	assert.Contains(t, lines[1], `"message":"by flags"`)
	assert.Contains(t, lines[2], `"seq":2,`)
	assert.Contains(t, lines[2], `"message":"by stdin"`)

	// A refused submit exits non-zero and prints the error body.
	stdout.Reset()
	code = run([]string{"send", "--sender-id", "alice", "--session-id", "empty"}, nil, &stdout, &stderr)
	assert.Equal(t, 1, code)
	assert.Contains(t, stdout.String(), "recipient_not_found")
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestTokenCommandReadsTheSecretFromEnvOrFile(t *testing.T) {
	var stdout, stderr bytes.Buffer
	assert.Equal(t, 2, run([]string{"token", "--participant-id", "alice"}, nil, &stdout, &stderr), "no secret anywhere")

	t.Setenv("SWITCHYARD_TOKEN_SECRET", "env-secret-env-secret-env-secret")
	require.Equal(t, 0, run([]string{"token", "--participant-id", "alice", "--session-id", "s1"}, nil, &stdout, &stderr), stderr.String())
	tok := strings.TrimSpace(stdout.String())
	assert.Equal(t, 2, strings.Count(tok, "."), "a JWT")

	// The token works against a node with the same secret, as alice only.
	node := startNode(t, sidecar.Config{APIKeys: []string{"admin"},
		TokenSecret: []byte("env-secret-env-secret-env-secret")})
	stdout.Reset()
	code := run([]string{"send", "--url", node.URL(), "--api-key", tok, "--sender-id", "mallory", "--session-id", "s1"}, nil, &stdout, &stderr)
	assert.Equal(t, 1, code)
	assert.Contains(t, stdout.String(), `"forbidden"`)

	path := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(path, []byte("file-secret\n"), 0o600))
	stdout.Reset()
	require.Equal(t, 0, run([]string{"token", "--participant-id", "bob", "--secret-file", path}, nil, &stdout, &stderr))
	assert.NotEqual(t, tok, strings.TrimSpace(stdout.String()))
}

func TestConfigFilePrecedenceAndPrintConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
listen: 127.0.0.1:0
mailbox-size: 64
mailbox-ttl: 1m
offline-ttl: 30s
api-key: [from-file-1, from-file-2]
allow-gateway:
  - https://gw.example.com
gossip-key: MDEyMzQ1Njc4OWFiY2RlZg==
insecure: false
`), 0o600))
	t.Setenv("SWITCHYARD_MAILBOX_TTL", "2m") // environment beats the file
	var stdout, stderr bytes.Buffer
	code := run([]string{"serve", "--config", path, "--offline-ttl", "45s", "--print-config"}, nil, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	out := stdout.String()
	assert.Contains(t, out, "mailbox-size: 64\n", "the file fills what nobody else set")
	assert.Contains(t, out, "mailbox-ttl: 2m0s", "environment > file")
	assert.Contains(t, out, "offline-ttl: 45s", "flag > environment > file")
	assert.Contains(t, out, "https://gw.example.com")
	assert.Contains(t, out, "drain-timeout: 10s", "defaults for the rest")
	for _, secret := range []string{"from-file-1", "from-file-2", "MDEyMzQ1Njc4OWFiY2RlZg=="} {
		assert.NotContains(t, out, secret, "secrets are left out")
	}
	assert.Contains(t, out, "\n#   api-key\n#   gossip-key\n", "and named in a comment")
	assert.NotContains(t, out, "\napi-key:")
}

func TestConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ body, want string }{
		"unknown key":   {"mailbox-size: 5\nmailbox-sise: 6\n", `unknown key "mailbox-sise"`},
		"bad value":     {"mailbox-size: lots\n", `key "mailbox-size"`},
		"list for one":  {"listen: [a, b]\n", `key "listen" takes one value`},
		"not yaml":      {"listen: [\n", "--config"},
		"config itself": {"config: other.yaml\n", `unknown key "config"`},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".yaml")
			require.NoError(t, os.WriteFile(path, []byte(tc.body), 0o600))
			var stderr bytes.Buffer
			code := run([]string{"serve", "--config", path, "--print-config"}, nil, &bytes.Buffer{}, &stderr)
			assert.Equal(t, 2, code)
			assert.Contains(t, stderr.String(), tc.want)
		})
	}
}

// TestServeRefusesEmptyKeys: an empty API key or cluster key given on
// purpose stops serve at start with a message naming where it came from
// (exit 2), instead of starting with authentication on and no usable key,
// or with none at all; the keys themselves are never printed.
func TestServeRefusesEmptyKeys(t *testing.T) {
	emptyFile := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(emptyFile, []byte("# no key yet\n\n"), 0o600))
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"empty --api-key", []string{"--api-key", ""}, nil, "--api-key is empty"},
		{"empty --api-key on every interface", []string{"--api-key", "", "--listen", "0.0.0.0:0"}, nil, "--api-key is empty"},
		{"blank --api-key", []string{"--api-key", "  "}, nil, "--api-key is empty"},
		{"empty item in SWITCHYARD_API_KEYS", nil, map[string]string{"SWITCHYARD_API_KEYS": "secret-one,,secret-two"}, "SWITCHYARD_API_KEYS holds an empty key (item 2)"},
		{"blank SWITCHYARD_API_KEYS", nil, map[string]string{"SWITCHYARD_API_KEYS": " "}, "SWITCHYARD_API_KEYS holds an empty key"},
		{"empty SWITCHYARD_API_KEY", nil, map[string]string{"SWITCHYARD_API_KEY": ""}, "SWITCHYARD_API_KEY holds an empty key"},
		{"keys file without a key", []string{"--api-keys-file", emptyFile}, nil, "holds no key"},
		{"empty --cluster-key", []string{"--api-key", "secret-one", "--cluster-key", ""}, nil, "--cluster-key is empty"},
		{"empty SWITCHYARD_CLUSTER_KEY", []string{"--api-key", "secret-one"}, map[string]string{"SWITCHYARD_CLUSTER_KEY": ""}, "--cluster-key is empty"},
		{"cluster key is an API key", []string{"--api-key", "secret-one", "--cluster-key", "secret-one"}, nil, "--cluster-key is also an API key"},
		{"older cluster key is an API key", []string{"--api-key", "secret-one", "--cluster-key", "ck", "--cluster-key", "secret-one"}, nil, "--cluster-key is also an API key"},
		{"second --cluster-key empty", []string{"--api-key", "secret-one", "--cluster-key", "ck", "--cluster-key", ""}, nil, "--cluster-key is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var stderr bytes.Buffer
			args := append([]string{"serve", "--listen", "127.0.0.1:0", "--gossip-bind", "127.0.0.1:0"}, tc.args...)
			done := make(chan int, 1)
			go func() { done <- run(args, strings.NewReader(""), &bytes.Buffer{}, &stderr) }()
			select {
			case code := <-done:
				assert.NotEqual(t, 0, code)
			case <-time.After(30 * time.Second): // a node that started serves until a signal
				t.Fatalf("serve started instead of refusing: %s", stderr.String())
			}
			assert.Contains(t, stderr.String(), tc.want)
			assert.NotContains(t, stderr.String(), "secret-two")
		})
	}
}
