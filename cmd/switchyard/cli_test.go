package main

import (
	"bytes"
	"debug/buildinfo"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/sidecar"
)

var subcommands = []string{"serve", "dev", "send", "listen", "members", "inject", "token", "version"}

func TestHelpGoesToStdoutAndExitsZero(t *testing.T) {
	for _, cmd := range subcommands {
		for _, h := range []string{"-h", "--help"} {
			var stdout, stderr bytes.Buffer
			code := run([]string{cmd, h}, strings.NewReader(""), &stdout, &stderr)
			assert.Equal(t, 0, code, "%s %s", cmd, h)
			assert.Empty(t, stderr.String(), "%s %s", cmd, h)
			assert.True(t, strings.HasPrefix(stdout.String(), "usage: switchyard "+cmd), "%s %s: %q", cmd, h, stdout.String())
			if cmd != "version" {
				assert.Contains(t, stdout.String(), "\nflags:\n")
			}
			assert.NotContains(t, stdout.String(), "help requested")
		}
	}
	var stdout bytes.Buffer
	require.Equal(t, 0, run([]string{"serve", "-h"}, nil, &stdout, &bytes.Buffer{}))
	assert.Contains(t, stdout.String(), "--mailbox-size int", "flags in the --flag spelling")
	assert.Contains(t, stdout.String(), "[$SWITCHYARD_MAILBOX_SIZE]", "with their environment variable")
}

func TestUnknownFlagPrintsOneLineAndAHint(t *testing.T) {
	for _, cmd := range subcommands {
		var stdout, stderr bytes.Buffer
		code := run([]string{cmd, "--foo"}, strings.NewReader(""), &stdout, &stderr)
		assert.Equal(t, 2, code, cmd)
		assert.Empty(t, stdout.String(), cmd)
		assert.Equal(t, "switchyard "+cmd+": unknown flag --foo (see switchyard "+cmd+" -h)\n", stderr.String())
	}
	var stderr bytes.Buffer
	assert.Equal(t, 2, run([]string{"serve", "--mailbox-size", "lots"}, nil, &bytes.Buffer{}, &stderr))
	assert.Equal(t, 1, strings.Count(stderr.String(), "\n"), stderr.String())
	assert.Contains(t, stderr.String(), `switchyard serve: invalid value "lots" for flag --mailbox-size`)
	stderr.Reset()
	assert.Equal(t, 2, run([]string{"listen"}, nil, &bytes.Buffer{}, &stderr))
	assert.Equal(t, "switchyard listen: --participant-id is required (see switchyard listen -h)\n", stderr.String())
}

func TestNodeURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8787":          "http://127.0.0.1:8787",
		"localhost:8787":          "http://localhost:8787",
		"http://127.0.0.1:8787":   "http://127.0.0.1:8787",
		"https://sy.example.com/": "https://sy.example.com/",
	} {
		got, err := nodeURL(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for in, want := range map[string]string{
		"ws://127.0.0.1:8787":  "the scheme is ws://",
		"ftp://example.com":    "the scheme is ftp://",
		"http://":              "has no host",
		"http://exa mple.com/": "invalid character",
	} {
		_, err := nodeURL(in)
		assert.ErrorContains(t, err, want, in)
	}
}

func TestURLWithoutSchemeIsHTTPAndOtherSchemesAreRefused(t *testing.T) {
	node := startNode(t, sidecar.Config{})
	bare := strings.TrimPrefix(node.URL(), "http://")
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run([]string{"members", "--url", bare}, nil, &stdout, &stderr), stderr.String())
	assert.Contains(t, stdout.String(), "(self)")

	stderr.Reset()
	code := run([]string{"send", "--url", "ws://" + bare, "--sender-id", "a", "--session-id", "s"}, nil, &stdout, &stderr)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr.String(), "switchyard send: --url \"ws://")
	assert.Contains(t, stderr.String(), "give the node's http:// or https:// URL")
}

func TestListenSaysWhatItRetriesAndWhy(t *testing.T) {
	node := startNode(t, sidecar.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now

	var out, errOut syncBuffer
	done := make(chan int)
	go func() {
		done <- run([]string{"listen", "--url", dead, "--also-url", node.URL(), "--participant-id", "bob",
			"--session-id", "s1", "--count", "1"}, nil, &out, &errOut)
	}()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), `"type":"welcome"`) },
		10*time.Second, 10*time.Millisecond)
	line := errOut.String()
	assert.Contains(t, line, `listen="cannot attach; retrying"`)
	assert.Contains(t, line, "url=http://"+dead)
	assert.Contains(t, line, "connection refused")
	assert.Contains(t, line, "next="+node.URL())

	var stderr bytes.Buffer
	require.Equal(t, 0, run([]string{"send", "--url", node.URL(), "--sender-id", "alice", "--session-id", "s1", "--message", "hi"},
		nil, &bytes.Buffer{}, &stderr), stderr.String())
	select {
	case code := <-done:
		assert.Equal(t, 0, code)
	case <-time.After(10 * time.Second):
		t.Fatal("listen did not exit after one event")
	}
}

func TestTokenSecretFileHasServesNameAndTheOldOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(path, []byte("file-secret-file-secret-file-secret\n"), 0o600))
	for _, name := range []string{"--token-secret-file", "--secret-file"} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, 0, run([]string{"token", "--participant-id", "bob", name, path}, nil, &stdout, &stderr), stderr.String())
		assert.Equal(t, 2, strings.Count(stdout.String(), "."), name)
	}
	var stdout bytes.Buffer
	require.Equal(t, 0, run([]string{"token", "-h"}, nil, &stdout, &bytes.Buffer{}))
	assert.Contains(t, stdout.String(), "deprecated name of --token-secret-file")
}

// printConfig runs serve --print-config with args and returns its output.
func printConfigOutput(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"serve", "--print-config"}, args...), nil, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	return stdout.String()
}

func TestPrintConfigRoundTripsThroughConfig(t *testing.T) {
	dir := t.TempDir()
	first := filepath.Join(dir, "first.yaml")
	require.NoError(t, os.WriteFile(first, []byte(`
mailbox-size: 64
api-key: [from-file-1, from-file-2]
allow-gateway: [https://gw.example.com, https://gw2.example.com]
rate-limit: 12.5
insecure: true
`), 0o600))
	args := []string{"--config", first, "--offline-ttl", "45s", "--max-body-bytes", "2048", "--log-format", "json"}

	// With --print-secrets the output is the whole configuration.
	whole := printConfigOutput(t, append(args, "--print-secrets")...)
	assert.Contains(t, whole, "- from-file-1\n")
	second := filepath.Join(dir, "second.yaml")
	require.NoError(t, os.WriteFile(second, []byte(whole), 0o600))
	assert.Equal(t, whole, printConfigOutput(t, "--config", second, "--print-secrets"), "--config takes it back, same values")

	// Without, secrets are named, not printed; given again (here by the
	// environment) the file yields the same configuration.
	t.Setenv("SWITCHYARD_TOKEN_SECRET", "env-secret-env-secret-env-secret")
	masked := printConfigOutput(t, args...)
	for _, secret := range []string{"from-file-1", "env-secret"} {
		assert.NotContains(t, masked, secret)
	}
	assert.Contains(t, masked, "#   api-key\n#   token-secret\n")
	third := filepath.Join(dir, "third.yaml")
	require.NoError(t, os.WriteFile(third, []byte(masked), 0o600))
	t.Setenv("SWITCHYARD_API_KEY", "from-file-1,from-file-2")
	assert.Equal(t, masked, printConfigOutput(t, "--config", third))
	assert.Equal(t, whole, strings.Replace(printConfigOutput(t, "--config", third, "--print-secrets"),
		"token-secret: env-secret-env-secret-env-secret\n", "token-secret: \"\"\n", 1))

	var stderr bytes.Buffer
	assert.Equal(t, 2, run([]string{"serve", "--print-secrets"}, nil, &bytes.Buffer{}, &stderr))
	assert.Contains(t, stderr.String(), "--print-secrets goes with --print-config")
}

func TestVersionPrintsBuildInformation(t *testing.T) {
	var stdout bytes.Buffer
	require.Equal(t, 0, run([]string{"version"}, nil, &stdout, &bytes.Buffer{}))
	out := stdout.String()
	assert.True(t, strings.HasPrefix(out, "switchyard "+versionString()+"\n"), out)
	assert.Contains(t, out, "\nrevision: ")
	assert.Contains(t, out, "\ngo:       "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+"\n")
}

// The real binary: the Makefile's -ldflags version comes first, and the
// revision is the one Go stamped into it (if it stamped one).
func TestVersionOfTheBuiltBinary(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go tool is not on PATH; the test builds the binary with it")
	}
	bin := filepath.Join(t.TempDir(), "switchyard")
	out, err := exec.Command(goBin, "build", "-ldflags", "-X main.version=v1.2.3-test", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	info, err := buildinfo.ReadFile(bin)
	require.NoError(t, err)
	revision, dirty := "unknown (built without VCS information)", ""
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = " (dirty: built with uncommitted changes)"
			}
		}
	}
	out, err = exec.Command(bin, "version").Output()
	require.NoError(t, err)
	lines := strings.Split(string(out), "\n")
	assert.Equal(t, "switchyard v1.2.3-test", lines[0])
	assert.Contains(t, string(out), "\nrevision: "+revision+dirty+"\n")
	assert.Contains(t, string(out), "\ngo:       "+info.GoVersion+" ")
}
