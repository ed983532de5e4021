package routing

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestURLUnderAllowPrefix(t *testing.T) {
	for _, tc := range []struct {
		url, prefix string
		want        bool
	}{
		{"https://gw.example.com", "https://gw.example.com", true},
		{"https://gw.example.com/", "https://gw.example.com", true},
		{"https://gw.example.com/team/a", "https://gw.example.com/team", true},
		{"https://GW.example.com/team", "https://gw.example.com/team/", true},
		{"https://gw.example.com.evil.net", "https://gw.example.com", false},
		{"https://gw.example.com:8443", "https://gw.example.com", false},
		{"http://gw.example.com", "https://gw.example.com", false},
		{"https://gw.example.com/teamster", "https://gw.example.com/team", false},
		{"https://user@gw.example.com", "https://gw.example.com", false},
		// Dot segments are never under a prefix, however spelt.
		{"https://gw.example.com/hooks/../admin", "https://gw.example.com/hooks", false},
		{"https://gw.example.com/hooks/./x", "https://gw.example.com/hooks", false},
		{"https://gw.example.com/hooks/%2e%2e/admin", "https://gw.example.com/hooks", false},
		{"https://gw.example.com/hooks/%2E%2e/admin", "https://gw.example.com/hooks", false},
		{"https://gw.example.com/hooks/.%2E/admin", "https://gw.example.com/hooks", false},
		{"https://gw.example.com/hooks/%252e%252e/admin", "https://gw.example.com/hooks", false},
		{"https://gw.example.com/hooks/..;/admin", "https://gw.example.com/hooks", false},
		{"https://gw.example.com/hooks/..%2Fadmin", "https://gw.example.com/hooks", false},
		{"https://gw.example.com/hooks/a%5C..%5Cadmin", "https://gw.example.com/hooks", false},
		{"https://gw.example.com/hooks\\..\\admin", "https://gw.example.com/hooks", false},
		{"https://gw.example.com/hooks/..", "https://gw.example.com", false},
		// Matching is on the decoded path; dots inside a name are fine.
		{"https://gw.example.com/h%6Foks/a", "https://gw.example.com/hooks", true},
		{"https://gw.example.com/hooks/v1.2/..x/a..b", "https://gw.example.com/hooks", true},
	} {
		assert.Equal(t, tc.want, urlUnder(tc.url, tc.prefix), "%s under %s", tc.url, tc.prefix)
	}
}
