package sidecar

import (
	"runtime"
	"runtime/debug"
)

// BuildInfo is what the Go toolchain stamped into the running binary.
type BuildInfo struct {
	// ModuleVersion is the main module's version ("" for a build from a
	// checkout, which Go reports as "(devel)").
	ModuleVersion string
	// Revision and Time are the VCS commit and its time ("" when the
	// build had no VCS information, e.g. without .git); Modified says the
	// working tree had uncommitted changes.
	Revision, Time string
	Modified       bool
	// GoVersion is the Go release that built the binary.
	GoVersion string
}

// ReadBuildInfo reads the running binary's build information.
func ReadBuildInfo() BuildInfo {
	b := BuildInfo{GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if bi.GoVersion != "" {
		b.GoVersion = bi.GoVersion
	}
	if v := bi.Main.Version; v != "(devel)" {
		b.ModuleVersion = v
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}
