package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// secretFlags are left out by --print-config (unless --print-secrets).
var secretFlags = []string{"api-key", "cluster-key", "external-key", "gossip-key", "token-secret"}

// applyConfigFile fills, from the YAML file at path, every flag that the
// command line and the environment left unset: flags > environment > file >
// defaults. Keys are flag names; a list flag takes a YAML sequence; an
// unknown key is an error naming it.
func applyConfigFile(fs *flag.FlagSet, path string, set map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read --config: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("--config %s: %w", path, err)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		f := fs.Lookup(key)
		if f == nil || slices.Contains(notConfig, key) {
			return fmt.Errorf("--config %s: unknown key %q (keys are the serve flags without dashes in front, e.g. mailbox-size)", path, key)
		}
		if set[key] {
			continue // the command line or the environment said it
		}
		values, err := configValues(doc[key])
		if err != nil {
			return fmt.Errorf("--config %s: key %q: %w", path, key, err)
		}
		if _, isList := f.Value.(*listFlag); !isList && len(values) != 1 {
			return fmt.Errorf("--config %s: key %q takes one value, not a list", path, key)
		}
		for _, v := range values {
			if err := f.Value.Set(v); err != nil {
				return fmt.Errorf("--config %s: key %q: %w", path, key, err)
			}
		}
	}
	return nil
}

// configValues turns a YAML value into flag strings.
func configValues(v any) ([]string, error) {
	switch x := v.(type) {
	case []any:
		var out []string
		for _, item := range x {
			s, err := configValues(item)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
		return out, nil
	case string:
		return []string{x}, nil
	case bool:
		return []string{strconv.FormatBool(x)}, nil
	case int:
		return []string{strconv.Itoa(x)}, nil
	case float64:
		return []string{strconv.FormatFloat(x, 'f', -1, 64)}, nil
	case nil:
		return nil, fmt.Errorf("has no value")
	}
	return nil, fmt.Errorf("a %T is not a flag value", v)
}

// notConfig are the serve flags that are no configuration: --config
// refuses them as keys and --print-config leaves them out.
var notConfig = []string{"config", "print-config", "print-secrets"}

// printConfig writes the effective configuration as YAML that --config
// takes back. Secrets that are set are left out, named in a comment,
// unless showSecrets: then the file round-trips whole.
func printConfig(fs *flag.FlagSet, showSecrets bool) ([]byte, error) {
	out := map[string]any{}
	var withheld []string
	fs.VisitAll(func(f *flag.Flag) {
		if slices.Contains(notConfig, f.Name) {
			return
		}
		var v any = f.Value.String()
		if l, ok := f.Value.(*listFlag); ok {
			v = []string(*l)
			if len(*l) == 0 {
				v = []string{}
			}
		} else if g, ok := f.Value.(flag.Getter); ok {
			switch x := g.Get().(type) {
			case bool, int, int64, float64:
				v = x
			}
		}
		if slices.Contains(secretFlags, f.Name) && f.Value.String() != "" && !showSecrets {
			withheld = append(withheld, f.Name)
			return
		}
		out[f.Name] = v
	})
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# switchyard serve, effective configuration (%s); --config takes this file back.\n", versionString())
	if len(withheld) > 0 {
		fmt.Fprintln(&buf, "# Set but not printed (secrets; give them again by environment or file, or see them with --print-secrets):")
		for _, name := range withheld {
			fmt.Fprintf(&buf, "#   %s\n", name)
		}
	}
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

// flagsSet lists the flags given on the command line or in the environment.
func flagsSet(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := os.LookupEnv(envName(f.Name)); ok {
			set[f.Name] = true
		}
	})
	if os.Getenv("SWITCHYARD_API_KEYS") != "" {
		set["api-key"] = true
	}
	return set
}
