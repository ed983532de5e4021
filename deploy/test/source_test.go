package deploytest

// Facts about the binary, read from the main module's source, so that the
// manifests are checked against what the code does rather than against
// numbers copied into this test.

import (
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// repoRoot is the main module's directory.
const repoRoot = "../.."

func readRepoFile(t testing.TB, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return string(b)
}

// serveFlag is one `switchyard serve` flag as serve.go declares it.
type serveFlag struct {
	name   string
	defVal string // the default's Go expression
}

var flagDecl = regexp.MustCompile(`fs\.(?:String|Int|Int64|Bool|Duration|Float64)Var\(&f\.\w+, "([a-z0-9-]+)", ([^,]+),|fs\.Var\(&f\.\w+, "([a-z0-9-]+)",`)

// serveFlags lists the serve flags by name.
func serveFlags(t testing.TB) map[string]serveFlag {
	t.Helper()
	src := readRepoFile(t, "cmd/switchyard/serve.go")
	flags := map[string]serveFlag{}
	for _, m := range flagDecl.FindAllStringSubmatch(src, -1) {
		if m[1] != "" {
			flags[m[1]] = serveFlag{name: m[1], defVal: strings.TrimSpace(m[2])}
		} else {
			flags[m[3]] = serveFlag{name: m[3]}
		}
	}
	for _, must := range []string{"listen", "drain-timeout", "gossip-bind", "join", "api-key", "gossip-key", "token-secret"} {
		if _, ok := flags[must]; !ok {
			t.Fatalf("serve.go: flag --%s not found; has the flag declaration changed? (this test reads it)", must)
		}
	}
	return flags
}

// envToFlag maps SWITCHYARD_* environment variables to serve flags, the
// way cmd/switchyard/flags.go names them.
func envToFlag(t testing.TB) map[string]string {
	m := map[string]string{"SWITCHYARD_API_KEYS": "api-key"}
	for name := range serveFlags(t) {
		m["SWITCHYARD_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))] = name
	}
	return m
}

// defaults are the binary's defaults the manifests must agree with.
type defaults struct {
	httpPort, gossipPort int
	drainTimeout         time.Duration
	healthz, readyz      string
}

func binaryDefaults(t testing.TB) defaults {
	t.Helper()
	flags := serveFlags(t)
	port := func(flag string) int {
		v, err := strconv.Unquote(flags[flag].defVal)
		if err != nil {
			t.Fatalf("serve.go: default of --%s is %s, not a string", flag, flags[flag].defVal)
		}
		i := strings.LastIndex(v, ":")
		p, err := strconv.Atoi(v[i+1:])
		if err != nil {
			t.Fatalf("serve.go: default of --%s is %q, not host:port", flag, v)
		}
		return p
	}
	d := defaults{httpPort: port("listen"), gossipPort: port("gossip-bind")}
	m := regexp.MustCompile(`^(\d+) ?\* ?time\.(Second|Minute)$`).FindStringSubmatch(flags["drain-timeout"].defVal)
	if m == nil {
		t.Fatalf("serve.go: default of --drain-timeout is %s; teach this test to read it", flags["drain-timeout"].defVal)
	}
	n, _ := strconv.Atoi(m[1])
	d.drainTimeout = time.Duration(n) * time.Second
	if m[2] == "Minute" {
		d.drainTimeout = time.Duration(n) * time.Minute
	}
	api := readRepoFile(t, "sidecar/api.go")
	for _, p := range []string{"/healthz", "/readyz"} {
		if !strings.Contains(api, `r.Get("`+p+`"`) {
			t.Fatalf("sidecar/api.go no longer routes GET %s", p)
		}
	}
	d.healthz, d.readyz = "/healthz", "/readyz"
	return d
}

// goSources returns the non-test Go files under the given directories of
// the main module, by path.
func goSources(t testing.TB, dirs ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, dir := range dirs {
		err := filepath.WalkDir(filepath.Join(repoRoot, dir), func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (d.Name() == "testdata" || d.Name() == "deploy") {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			out[path] = string(b)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

var metricName = regexp.MustCompile(`Name:\s*"(switchyard_[a-z0-9_]+)"`)

// registeredMetrics lists the switchyard_* metrics the code defines.
func registeredMetrics(t testing.TB) []string {
	t.Helper()
	names := sourceMatches(t, metricName, "sidecar", "ws", "membership", "cmd")
	if len(names) == 0 {
		t.Fatal("found no switchyard_* metric in the code; has the declaration changed?")
	}
	return names
}

var logCall = regexp.MustCompile(`\.(?:Debug|Info|Warn|Error)\(\s*"([^"]+)"`)

// nodeLogMessages lists the messages the node logs (the client library's
// own messages are not the node's).
func nodeLogMessages(t testing.TB) []string {
	t.Helper()
	return sourceMatches(t, logCall, "sidecar", "ws", "membership", "cmd/switchyard")
}

// sourceMatches lists, sorted and once each, what the first group of re
// matches in the non-test Go sources under dirs.
func sourceMatches(t testing.TB, re *regexp.Regexp, dirs ...string) []string {
	t.Helper()
	set := map[string]bool{}
	for _, src := range goSources(t, dirs...) {
		for _, m := range re.FindAllStringSubmatch(src, -1) {
			set[m[1]] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}
