package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/switchyard-gw/switchyard/sidecar"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

const usage = `switchyard: a sidecar gateway for agent messaging

usage:
  switchyard serve   [flags]   run a node
  switchyard dev     [flags]   three nodes in one process on loopback
  switchyard send    [flags]   submit one event (flags, or a JSON event on stdin)
  switchyard listen  [flags]   attach as a participant and print frames as JSON lines
  switchyard members [flags]   print the cluster as a table
  switchyard inject  -f agent.yaml  add the Switchyard sidecar to the workloads (Deployments, Jobs, Pods…)
  switchyard token   [flags]   mint a participant token (secret from --token-secret-file or $SWITCHYARD_TOKEN_SECRET)
  switchyard version           print the version, VCS revision and Go version

Every flag can also be set as SWITCHYARD_<FLAG> (dashes as underscores).
Run "switchyard <command> -h" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one command and returns the process exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serveCommand(args[1:], stdout, stderr)
	case "dev":
		err = devCommand(args[1:], stdout, stderr)
	case "inject":
		err = injectCommand(args[1:], stdin, stdout, stderr)
	case "token":
		err = tokenCommand(args[1:], stdout, stderr)
	case "members":
		err = membersCommand(args[1:], stdout, stderr)
	case "send":
		err = sendCommand(args[1:], stdin, stdout, stderr)
	case "listen":
		err = listenCommand(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		err = versionCommand(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "switchyard: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errReported):
		return 2
	case errors.Is(err, errUsage):
		msg := strings.TrimPrefix(err.Error(), errUsage.Error()+": ")
		name := strings.TrimLeft(args[0], "-") // --version is version
		fmt.Fprintf(stderr, "switchyard %s: %s (see switchyard %s -h)\n", name, msg, name)
		return 2
	case errors.Is(err, context.Canceled):
		return 0
	default:
		fmt.Fprintln(stderr, "switchyard:", err)
		return 1
	}
}

var errUsage = errors.New("usage")

// versionString is the node's version: what the Makefile stamps with
// -ldflags, else the module version of a `go install …@version`, else dev.
func versionString() string {
	if version != "" {
		return version
	}
	if v := sidecar.ReadBuildInfo().ModuleVersion; v != "" {
		return v
	}
	return "dev"
}

func versionCommand(args []string, stdout, stderr io.Writer) error {
	cmd := command{name: "version", synopsis: "",
		about: `
Prints the version, then the module version, VCS revision and time, whether
the tree was dirty, and the Go version, from the binary's build information.`}
	if err := cmd.parse(newFlagSet("version"), args, stdout, stderr); err != nil {
		return err
	}
	fmt.Fprint(stdout, versionReport())
	return nil
}

// versionReport is what `switchyard version` prints: the version, then the
// build information Go stamped into the binary.
func versionReport() string {
	b := sidecar.ReadBuildInfo()
	var sb strings.Builder
	fmt.Fprintf(&sb, "switchyard %s\n", versionString())
	module := b.ModuleVersion
	if module == "" {
		module = "(devel)"
	}
	fmt.Fprintf(&sb, "module:   %s\n", module)
	switch {
	case b.Revision == "":
		fmt.Fprintf(&sb, "revision: unknown (built without VCS information)\n")
	case b.Modified:
		fmt.Fprintf(&sb, "revision: %s (dirty: built with uncommitted changes)\n", b.Revision)
	default:
		fmt.Fprintf(&sb, "revision: %s\n", b.Revision)
	}
	if b.Time != "" {
		fmt.Fprintf(&sb, "time:     %s\n", b.Time)
	}
	fmt.Fprintf(&sb, "go:       %s %s/%s\n", b.GoVersion, runtime.GOOS, runtime.GOARCH)
	return sb.String()
}
