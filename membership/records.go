package membership

import (
	"slices"
	"strings"
	"sync"
)

// records are the directory records this node keeps as an owner: written
// by their homes (each node writes only its own participants' records),
// read by any node that routes to them. Safe for concurrent use; it never
// calls out while holding its lock.
type records struct {
	mu sync.RWMutex
	// participant → home → where it lives there.
	participants map[string]map[string]participantRecord
	// session → home → participant → member. Grouped by home so that a
	// router skips the members its own node hosts without visiting them.
	sessions map[string]map[string]map[string]memberRecord
	// epochs: home → the life of that node whose records are held.
	epochs map[string]int64
}

type participantRecord struct {
	typ, gatewayURL string
	online          bool
}

type memberRecord struct{ typ, gatewayURL string }

func newRecords() *records {
	return &records{
		participants: map[string]map[string]participantRecord{},
		sessions:     map[string]map[string]map[string]memberRecord{},
		epochs:       map[string]int64{},
	}
}

// apply takes one home's message. It reports false for a message of an
// earlier life of that home (ignored).
func (s *records) apply(kind byte, m homeMessage) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ep, known := s.epochs[m.Node]; {
	case known && m.Epoch < ep:
		return false
	case known && m.Epoch > ep:
		s.dropHomeLocked(m.Node)
	}
	s.epochs[m.Node] = m.Epoch
	switch kind {
	case msgLeaving:
		s.dropHomeLocked(m.Node)
		return true
	case msgReplace:
		s.dropHomeLocked(m.Node)
		s.epochs[m.Node] = m.Epoch
	}
	for _, r := range m.Records {
		s.putLocked(m.Node, r)
	}
	return true
}

func (s *records) putLocked(home string, r record) {
	if r.Session == "" {
		homes := s.participants[r.Participant]
		if r.Gone {
			delete(homes, home)
			if len(homes) == 0 {
				delete(s.participants, r.Participant)
			}
			return
		}
		if homes == nil {
			homes = map[string]participantRecord{}
			s.participants[r.Participant] = homes
		}
		homes[home] = participantRecord{typ: r.Type, gatewayURL: r.GatewayURL, online: r.Online}
		return
	}
	groups := s.sessions[r.Session]
	if r.Gone {
		delete(groups[home], r.Participant)
		if len(groups[home]) == 0 {
			delete(groups, home)
		}
		if len(groups) == 0 {
			delete(s.sessions, r.Session)
		}
		return
	}
	if groups == nil {
		groups = map[string]map[string]memberRecord{}
		s.sessions[r.Session] = groups
	}
	members := groups[home]
	if members == nil {
		members = map[string]memberRecord{}
		groups[home] = members
	}
	members[r.Participant] = memberRecord{typ: r.Type, gatewayURL: r.GatewayURL}
}

// matches reports whether the records held of home's life epoch have the
// digest d: the anti-entropy round asks it, and only a mismatch costs a
// re-send of the records.
func (s *records) matches(home string, epoch int64, d digest) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if ep, known := s.epochs[home]; (!known || ep != epoch) && d.count > 0 {
		return false
	}
	var held digest
	for id, homes := range s.participants {
		if r, ok := homes[home]; ok {
			held.add(record{Participant: id, Type: r.typ, Online: r.online, GatewayURL: r.gatewayURL})
		}
	}
	for session, groups := range s.sessions {
		for id, m := range groups[home] {
			held.add(record{Participant: id, Session: session, Type: m.typ, GatewayURL: m.gatewayURL})
		}
	}
	return held == d
}

// dropHome forgets every record home wrote (it left or died).
func (s *records) dropHome(home string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropHomeLocked(home)
	delete(s.epochs, home)
}

func (s *records) dropHomeLocked(home string) {
	for id, homes := range s.participants {
		delete(homes, home)
		if len(homes) == 0 {
			delete(s.participants, id)
		}
	}
	for id, groups := range s.sessions {
		delete(groups, home)
		if len(groups) == 0 {
			delete(s.sessions, id)
		}
	}
}

// lookup returns the entries held for key, sorted by participant then
// node. skipHome leaves out the members of a session that home hosts
// (external ones stay in): a router finds its own node's members in its
// hub; skipped says how many were left out.
func (s *records) lookup(key, skipHome string) (out []Entry, skipped int) {
	s.mu.RLock()
	switch {
	case strings.HasPrefix(key, "p:"):
		id := key[2:]
		for home, r := range s.participants[id] {
			out = append(out, Entry{Participant: id, Node: home, Type: r.typ, Online: r.online, GatewayURL: r.gatewayURL})
		}
	case strings.HasPrefix(key, "s:"):
		for home, members := range s.sessions[key[2:]] {
			for id, m := range members {
				if home == skipHome && m.gatewayURL == "" {
					skipped++
					continue
				}
				out = append(out, Entry{Participant: id, Node: home, Type: m.typ, GatewayURL: m.gatewayURL})
			}
		}
	}
	s.mu.RUnlock()
	sortEntries(out)
	return out, skipped
}

// size is how many records are held (participants and memberships).
func (s *records) size() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, homes := range s.participants {
		n += len(homes)
	}
	for _, groups := range s.sessions {
		for _, members := range groups {
			n += len(members)
		}
	}
	return n
}

// homeCount is how many records of home are held.
func (s *records) homeCount(home string) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, homes := range s.participants {
		if _, ok := homes[home]; ok {
			n++
		}
	}
	for _, groups := range s.sessions {
		n += len(groups[home])
	}
	return n
}

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		if c := strings.Compare(a.Participant, b.Participant); c != 0 {
			return c
		}
		return strings.Compare(a.Node, b.Node)
	})
}
