package ui

import (
	"embed"
	"net/http"
)

//go:embed static/index.html static/app.js
var files embed.FS

// csp keeps the page to its own script and its own node: no inline
// script, no other origin.
const csp = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the console: GET /ui (the page) and GET /ui/app.js.
func Handler() http.Handler {
	page, _ := files.ReadFile("static/index.html")
	script, _ := files.ReadFile("static/app.js")
	serve := func(body []byte, contentType string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h.Set("Content-Type", contentType)
			h.Set("Content-Security-Policy", csp)
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Referrer-Policy", "no-referrer")
			h.Set("Cache-Control", "no-cache")
			_, _ = w.Write(body)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /ui", serve(page, "text/html; charset=utf-8"))
	mux.Handle("GET /ui/{$}", http.RedirectHandler("/ui", http.StatusMovedPermanently))
	mux.Handle("GET /ui/app.js", serve(script, "text/javascript; charset=utf-8"))
	return mux
}
