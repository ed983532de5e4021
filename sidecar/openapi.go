package sidecar

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard-gw/switchyard/docs"
	"github.com/switchyard-gw/switchyard/internal/wire"
)

// openAPIJSON is docs/openapi.yaml as JSON, converted once when the program
// starts; openAPIErr says why it could not be (the conformance test loads
// the same document, so a broken one fails the tests first).
var openAPIJSON, openAPIErr = openAPIToJSON(docs.OpenAPIYAML)

// handleOpenAPI serves the OpenAPI document of this API (no credential
// needed, like /healthz).
func (n *Node) handleOpenAPI(w http.ResponseWriter, _ *http.Request) {
	if openAPIErr != nil {
		n.log.Error("the embedded OpenAPI document does not convert to JSON", "err", openAPIErr)
		wire.WriteError(w, openAPIErr)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPIJSON) // shared and never modified
}

// openAPIToJSON converts a YAML document to indented JSON ending in a
// newline.
func openAPIToJSON(src []byte) ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("decode docs/openapi.yaml: %w", err)
	}
	v, err := jsonValue(doc, "")
	if err != nil {
		return nil, fmt.Errorf("docs/openapi.yaml: %w", err)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode docs/openapi.yaml as JSON: %w", err)
	}
	return append(b, '\n'), nil
}

// jsonValue turns what the YAML decoder produced into values encoding/json
// writes as the same document: mappings with keys that are not strings
// (an unquoted 200) get string keys; anything JSON cannot hold is an error
// naming where it is.
func jsonValue(v any, at string) (any, error) {
	switch v := v.(type) {
	case nil, string, bool, int, int64, uint64:
		return v, nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%s: %v has no JSON form", at, v)
		}
		return v, nil
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			var err error
			if out[i], err = jsonValue(x, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return nil, err
			}
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			var err error
			if out[k], err = jsonValue(x, at+"/"+k); err != nil {
				return nil, err
			}
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			key, ok := k.(string)
			if !ok {
				key = fmt.Sprint(k)
			}
			if _, dup := out[key]; dup {
				return nil, fmt.Errorf("%s: the key %q appears twice", at, key)
			}
			var err error
			if out[key], err = jsonValue(x, at+"/"+key); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: a YAML value of type %T has no JSON form", at, v)
}
