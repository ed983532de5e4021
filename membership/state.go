package membership

import (
	"encoding/json"
	"fmt"
)

// The gossip wire format. Every message is one JSON object whose first byte
// is preceded by a kind byte, so a message that does not decode is dropped
// whole and logged.
const (
	msgUpdates   byte = 'u' // a batch of one node's entry changes
	msgFullState byte = 's' // one node's complete set of entries
	msgLeaving   byte = 'l' // the node is leaving: drop its entries now
)

// versioned is one entry change as it travels: the owning node's counter
// at the change, and the entry (nil: the participant is gone).
type versioned struct {
	Participant string `json:"p"`
	Version     uint64 `json:"v"`
	Entry       *Entry `json:"e,omitempty"`
}

// nodeMessage carries changes (msgUpdates) or everything (msgFullState)
// that one node owns. Epoch is the owner's start time: versions are
// comparable only within one epoch, so a restarted node with the same name
// starts afresh.
type nodeMessage struct {
	Node    string      `json:"n"`
	Epoch   int64       `json:"ep"`
	Counter uint64      `json:"c,omitempty"` // full state: the owner's counter when it was taken
	Changes []versioned `json:"ch"`
}

func encodeMessage(kind byte, m nodeMessage) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic("membership: encoding a gossip message: " + err.Error()) // plain data: cannot happen
	}
	return append([]byte{kind}, b...)
}

func decodeMessage(data []byte) (byte, nodeMessage, error) {
	var m nodeMessage
	if len(data) < 2 {
		return 0, m, fmt.Errorf("message of %d bytes is too short", len(data))
	}
	if data[0] != msgUpdates && data[0] != msgFullState && data[0] != msgLeaving {
		return 0, m, fmt.Errorf("unknown message kind %q", data[0])
	}
	if err := json.Unmarshal(data[1:], &m); err != nil {
		return 0, m, fmt.Errorf("decode message: %w", err)
	}
	if m.Node == "" {
		return 0, m, fmt.Errorf("message names no node")
	}
	return data[0], m, nil
}

// peerState is what this node knows of another node's versions.
type peerState struct {
	epoch int64
	// floor: every change of that node up to it is known (from its last
	// full state); versions at or below it are stale.
	floor uint64
	// versions of the participants changed since the floor (tombstones
	// included, so a late update cannot resurrect a deleted entry).
	versions map[string]uint64
}

// merge applies one node's message to the directory and returns how many
// entries changed. Only the owner's own messages carry authority: a full
// state replaces everything of that node at or below its counter, so
// deletions the receiver missed are applied too.
func (ps *peerState) merge(dir *Directory, kind byte, m nodeMessage) int {
	switch {
	case m.Epoch < ps.epoch:
		return 0 // from a previous life of that node
	case m.Epoch > ps.epoch:
		dir.DropNode(m.Node)
		*ps = peerState{epoch: m.Epoch, versions: map[string]uint64{}}
	}
	changed := 0
	apply := func(c versioned) {
		if c.Version <= ps.floor || c.Version <= ps.versions[c.Participant] {
			return
		}
		ps.versions[c.Participant] = c.Version
		changed++
		if c.Entry == nil {
			dir.Delete(m.Node, c.Participant)
			return
		}
		e := *c.Entry
		e.Node, e.Participant = m.Node, c.Participant
		dir.Put(e)
	}
	for _, c := range m.Changes {
		apply(c)
	}
	if kind == msgFullState && m.Counter > ps.floor {
		present := make(map[string]bool, len(m.Changes))
		for _, c := range m.Changes {
			present[c.Participant] = true
		}
		for _, e := range dir.NodeEntries(m.Node) {
			if !present[e.Participant] && ps.versions[e.Participant] <= m.Counter {
				dir.Delete(m.Node, e.Participant)
				changed++
			}
		}
		ps.floor = m.Counter
		for p, v := range ps.versions {
			if v <= m.Counter {
				delete(ps.versions, p)
			}
		}
	}
	return changed
}
