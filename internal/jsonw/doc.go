// Package jsonw appends JSON to byte slices on hot paths, byte for byte as
// encoding/json's Marshal would write it (HTML-safe escaping included), so
// that hand-built encodings and reflected ones can never tell apart. Its
// tests hold it to encoding/json with a fuzz target.
package jsonw
