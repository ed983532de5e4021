// Package docs carries the documents that ship inside the switchyard binary:
// the OpenAPI description of the REST and WebSocket API (openapi.yaml),
// which a node serves, converted to JSON, at GET /openapi.json.
//
// The conformance test in package sidecar sends real requests to real nodes
// and validates every request and answer against this document, so the
// document and the code cannot drift apart.
package docs

import _ "embed" // for go:embed

// OpenAPIYAML is docs/openapi.yaml: the OpenAPI 3.1 document of the API.
//
//go:embed openapi.yaml
var OpenAPIYAML []byte
