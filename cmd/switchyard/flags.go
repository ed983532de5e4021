package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// listFlag is a repeatable string flag; from the environment it takes a
// comma-separated list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// envName is the environment variable of a flag: SWITCHYARD_ plus the flag
// name in upper case with dashes as underscores.
func envName(flagName string) string {
	return "SWITCHYARD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseWithEnv parses args, then fills every flag not given on the command
// line from its environment variable, so flags win over the environment.
func parseWithEnv(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags go before nothing else)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok {
			return
		}
		if _, isList := f.Value.(*listFlag); isList {
			for _, item := range strings.Split(v, ",") {
				if item = strings.TrimSpace(item); item != "" {
					_ = f.Value.Set(item)
				}
			}
			return
		}
		if e := f.Value.Set(v); e != nil {
			err = fmt.Errorf("environment %s: %w", envName(f.Name), e)
		}
	})
	return err
}

// errReported is returned once a command has printed its own usage error:
// run exits 2 without printing more.
var errReported = errors.New("usage error reported")

// command is a subcommand's flag set with what its help prints.
type command struct {
	name     string // e.g. "serve"
	synopsis string // what follows "switchyard <name>" in the usage line
	about    string // a paragraph under the usage line
	env      bool   // flags can come from SWITCHYARD_<FLAG>
	// argHint, when set, says what to do instead of giving an argument (a
	// fmt format of the argument), e.g. inject's "give it with -f".
	argHint string
}

// newFlagSet makes a flag set that prints nothing by itself: parse decides
// what goes where.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse parses args (and, if c.env, the environment). -h or --help prints
// the usage to stdout and returns flag.ErrHelp (exit 0); a bad flag prints
// one line and a hint to stderr and returns errReported (exit 2).
func (c command) parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	var err error
	if c.env {
		err = parseWithEnv(fs, args)
	} else {
		err = fs.Parse(args)
		if err == nil && fs.NArg() > 0 {
			err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
			if c.argHint != "" {
				err = fmt.Errorf("unexpected argument %q: "+c.argHint, fs.Arg(0), fs.Arg(0))
			}
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		c.printUsage(fs, stdout)
		return flag.ErrHelp
	}
	fmt.Fprintf(stderr, "switchyard %s: %s (see switchyard %s -h)\n", c.name, flagError(err), c.name)
	return errReported
}

// flagError rewrites the flag package's messages in the --flag spelling
// the help uses.
func flagError(err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return "unknown flag " + dashes(name)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
		return "flag " + dashes(name) + " needs a value"
	}
	// invalid value "x" for flag -name: reason
	if i := strings.Index(msg, " for flag -"); i >= 0 {
		return msg[:i] + " for flag --" + strings.TrimLeft(msg[i+len(" for flag "):], "-")
	}
	return msg
}

func dashes(name string) string { return "--" + strings.TrimLeft(name, "-") }

// printUsage writes the command's usage and flags, each flag with its
// default and its environment variable.
func (c command) printUsage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n\n", strings.TrimSpace("switchyard "+c.name+" "+c.synopsis))
	if c.about != "" {
		fmt.Fprintf(w, "%s\n\n", strings.TrimSpace(c.about))
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprintln(w, "flags:")
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "[]" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		if c.env {
			fmt.Fprintf(w, " [$%s]", envName(f.Name))
		}
		fmt.Fprintln(w)
	})
}
