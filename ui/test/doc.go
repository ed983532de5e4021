// Package test runs the web console (switchyard serve --ui) in a real
// headless Chromium, driven over the DevTools protocol by chromedp, against
// a two-node cluster on loopback. It is its own Go module so that chromedp
// stays out of the main one; CI (.ci/run) installs Debian's chromium and
// runs `go test ./...` here. CHROMIUM names the browser binary (default
// /usr/bin/chromium).
package test
