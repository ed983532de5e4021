package membership

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestRecordsUpdatesReplaceAndDrop(t *testing.T) {
	s := newRecords()
	s.apply(msgUpdates, homeMessage{Node: "a", Epoch: 1, Records: []record{
		{Participant: "bob", Type: "ai", Online: true}, {Participant: "bob", Session: "s1", Type: "ai"},
		{Participant: "ext", GatewayURL: "https://gw"}, {Participant: "ext", Session: "s1", GatewayURL: "https://gw"},
	}})
	s.apply(msgUpdates, homeMessage{Node: "b", Epoch: 1, Records: []record{{Participant: "carol", Session: "s1"}}})
	assert.Equal(t, []Entry{{Participant: "bob", Node: "a", Type: "ai", Online: true}}, first(s.lookup(participantKey("bob"), "")))
	assert.Equal(t, []string{"bob@a", "carol@b", "ext@a"}, placements(first(s.lookup(sessionKey("s1"), ""))))
	assert.Equal(t, []string{"carol@b", "ext@a"}, placements(first(s.lookup(sessionKey("s1"), "a"))),
		"a node's own members are skipped, the external ones it wrote are not")

	s.apply(msgUpdates, homeMessage{Node: "a", Epoch: 1, Records: []record{{Participant: "bob", Session: "s1", Gone: true}}})
	assert.Equal(t, []string{"carol@b", "ext@a"}, placements(first(s.lookup(sessionKey("s1"), ""))))

	s.apply(msgReplace, homeMessage{Node: "a", Epoch: 1, Records: []record{{Participant: "dave", Session: "s2"}}})
	assert.Equal(t, []string{"carol@b"}, placements(first(s.lookup(sessionKey("s1"), ""))), "a replace drops what it does not name")
	assert.Equal(t, []string{"dave@a"}, placements(first(s.lookup(sessionKey("s2"), ""))))

	assert.False(t, s.apply(msgUpdates, homeMessage{Node: "a", Epoch: 0, Records: []record{{Participant: "old", Session: "s2"}}}),
		"an earlier life is not heard")
	s.apply(msgUpdates, homeMessage{Node: "a", Epoch: 2, Records: []record{{Participant: "eve", Session: "s3"}}})
	assert.Empty(t, first(s.lookup(sessionKey("s2"), "")), "a new life starts afresh")

	s.dropHome("b")
	s.dropHome("a")
	assert.Zero(t, s.size())
	assert.Empty(t, s.participants)
	assert.Empty(t, s.sessions)
}

func placements(es []Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Participant + "@" + e.Node
	}
	return out
}

func TestLocalCluster(t *testing.T) {
	l := NewLocal("solo", "http://127.0.0.1:1")
	l.PutLocal(Entry{Participant: "bob", Type: "ai", Sessions: []string{"s1", "s2"}, Online: true})
	l.PutLocal(Entry{Participant: "ext", GatewayURL: "https://gw", Sessions: []string{"s1"}})
	assert.Equal(t, 1, l.Self().Participants, "external participants are not hosted")
	es, err := l.Session(t.Context(), "s1", "")
	assert.NoError(t, err)
	assert.Equal(t, []string{"bob@solo", "ext@solo"}, placements(es))
	l.PutLocal(Entry{Participant: "bob", Type: "ai", Sessions: []string{"s2"}})
	es, _ = l.Session(t.Context(), "s1", "")
	assert.Equal(t, []string{"ext@solo"}, placements(es), "a left session is dropped")
	ss, err := l.HomeSessions(t.Context(), "solo", "bob")
	assert.NoError(t, err)
	assert.Equal(t, []string{"s2"}, ss)
	l.DeleteLocal("bob")
	es, _ = l.Participant(t.Context(), "bob")
	assert.Empty(t, es)
	assert.Zero(t, l.Self().Participants)
}

func first(es []Entry, _ int) []Entry { return es }
