// Package ui is Switchyard's web console (switchyard serve --ui): one HTML
// page and one script, embedded in the binary and served at /ui. The page
// is static and public; everything it shows comes from the gateway API,
// called with the operator's API key typed into the page (kept in the
// tab's sessionStorage): the cluster's members, this node's local
// participants and their sessions, and a live view of a session's events
// through a read-only observer attach (GET /v1/gateway/ws?observe=1).
//
// The browser test is its own Go module in ui/test (chromedp stays out of
// the main module).
package ui
