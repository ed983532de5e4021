package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
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
  switchyard inject  -f agent.yaml  add the Switchyard sidecar to Deployments and StatefulSets
  switchyard token   [flags]   mint a participant token (secret from --token-secret-file or $SWITCHYARD_TOKEN_SECRET)
  switchyard version           print the version

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
		fmt.Fprintln(stdout, versionString())
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
		fmt.Fprintf(stderr, "switchyard %s: %s (see switchyard %s -h)\n", args[0], msg, args[0])
		return 2
	case errors.Is(err, context.Canceled):
		return 0
	default:
		fmt.Fprintln(stderr, "switchyard:", err)
		return 1
	}
}

var errUsage = errors.New("usage")

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
