package ident

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestProblem(t *testing.T) {
	cases := map[string]struct {
		in   string
		want string
	}{
		"ok":          {"agent-α", ""},
		"empty":       {"", "is empty"},
		"at limit":    {strings.Repeat("a", 8), ""},
		"over limit":  {strings.Repeat("a", 9), "is longer than the limit"},
		"bad utf8":    {"a\xffb", "is not valid UTF-8"},
		"newline":     {"a\nb", "contains a control character"},
		"nul":         {"a\x00", "contains a control character"},
		"c1 control":  {"a\u0085", "contains a control character"},
		"space is ok": {"a b", ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, Problem(tc.in, 8))
		})
	}
}
