package membership

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
)

// The directory's wire format between nodes. Every message is one JSON
// object preceded by a kind byte, so a message that does not decode is
// refused whole.
const (
	msgUpdates byte = 'u' // changes to some of a home's records
	msgReplace byte = 'r' // everything a home wants this owner to hold of it
	msgLeaving byte = 'l' // the home is leaving: drop its records now
	msgDigest  byte = 'd' // the count and hash of what this owner should hold of the home
)

// record is one directory record as it travels from its home to an
// owner: a participant record (Session empty: where the participant lives)
// or a session membership record (the participant is in Session). Gone
// removes it.
type record struct {
	Participant string `json:"p"`
	Session     string `json:"s,omitempty"`
	Type        string `json:"t,omitempty"`
	Online      bool   `json:"o,omitempty"`
	GatewayURL  string `json:"g,omitempty"`
	Gone        bool   `json:"x,omitempty"`
}

// key is the directory key whose owners keep r.
func (r record) key() string {
	if r.Session != "" {
		return sessionKey(r.Session)
	}
	return participantKey(r.Participant)
}

// homeMessage carries one home's records. Epoch is the home's start time:
// an owner keeps the records of one life of a node name, so a restarted
// node starts afresh and a late message of an earlier life is ignored.
type homeMessage struct {
	Node    string   `json:"n"`
	Epoch   int64    `json:"ep"`
	Records []record `json:"r,omitempty"`
	// A digest (msgDigest) instead of records: their count and the XOR
	// of their hashes.
	Count int    `json:"c,omitempty"`
	Hash  uint64 `json:"h,omitempty"`
}

// digest sums records as a digest message carries them: order does not
// matter, so the home and the owner compute it from their own maps.
type digest struct {
	count int
	hash  uint64
}

func (d *digest) add(r record) {
	h := fnv.New64a()
	for _, f := range []string{r.Participant, r.Session, r.Type, r.GatewayURL, strconv.FormatBool(r.Online)} {
		_, _ = h.Write([]byte(f))
		_, _ = h.Write([]byte{0})
	}
	d.count++
	d.hash ^= mix(h.Sum64())
}

func encodeMessage(kind byte, m homeMessage) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic("membership: encoding a directory message: " + err.Error()) // plain data: cannot happen
	}
	return append([]byte{kind}, b...)
}

func decodeMessage(data []byte) (byte, homeMessage, error) {
	var m homeMessage
	if len(data) < 2 {
		return 0, m, fmt.Errorf("message of %d bytes is too short", len(data))
	}
	if data[0] != msgUpdates && data[0] != msgReplace && data[0] != msgLeaving && data[0] != msgDigest {
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

// lookupRequest asks an owner for the records of some keys ("p:<id>",
// "s:<id>"), or a home for the sessions of its own participants
// (HomeSessions).
type lookupRequest struct {
	Keys []string `json:"keys,omitempty"`
	// Except leaves out the members of a session hosted by that node (the
	// asking node finds its own in its hub).
	Except string `json:"except,omitempty"`
	// Sessions names participants homed on the asked node whose sessions
	// are wanted.
	Sessions []string `json:"sessions,omitempty"`
}

// lookupAnswer maps each asked key to the entries held for it.
type lookupAnswer struct {
	Records map[string][]Entry `json:"records"`
	// Skipped counts, per key, the members left out by Except: the owner
	// does hold the key's records.
	Skipped  map[string]int      `json:"skipped,omitempty"`
	Sessions map[string][]string `json:"sessions,omitempty"`
}

// maxLookupKeys bounds the keys of one lookup request.
const maxLookupKeys = 1000
