package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/switchyard-gw/switchyard/sidecar"
)

// tokenCommand mints a participant token for testing. The secret comes from
// a file or the environment, never from a flag that lands in shell history.
func tokenCommand(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token")
	sub := fs.String("participant-id", "", "the participant the token speaks for (its sub claim; required)")
	var sessions listFlag
	fs.Var(&sessions, "session-id", "a session the token allows (repeatable; none: any session)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	secretFile := fs.String("token-secret-file", "", "file holding the token secret, as for serve (default: $SWITCHYARD_TOKEN_SECRET)")
	fs.StringVar(secretFile, "secret-file", "", "deprecated name of --token-secret-file")
	cmd := command{name: "token", synopsis: "--participant-id ID [flags]",
		about: `
Mints a participant token (HS256). The secret comes from --token-secret-file
or $SWITCHYARD_TOKEN_SECRET.`}
	if err := cmd.parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if *sub == "" {
		return fmt.Errorf("%w: --participant-id is required", errUsage)
	}
	secret := os.Getenv("SWITCHYARD_TOKEN_SECRET")
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("read --token-secret-file: %w", err)
		}
		secret = strings.TrimSpace(string(b))
	}
	if secret == "" {
		return fmt.Errorf("%w: give the secret in --token-secret-file or SWITCHYARD_TOKEN_SECRET", errUsage)
	}
	var allowed []string
	if len(sessions) > 0 {
		allowed = sessions
	}
	tok, err := sidecar.MintToken([]byte(secret), *sub, allowed, *ttl)
	if err != nil {
		return fmt.Errorf("mint token: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
