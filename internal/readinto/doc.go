// Package readinto reads a stream to its end into a caller's buffer, for
// hot paths that size or reuse buffers themselves (io.ReadAll always
// starts a new one).
package readinto
