package membership

import (
	"maps"
	"slices"
)

// ownRecords are what this node wrote about its own participants (it is
// their home), and the source of every record it sends their owners. Each
// change returns the records it changed: a join or a leave is one
// membership record, so its cost does not grow with the participant's
// other sessions. Not safe for concurrent use: Gossip.mu or Local.mu
// guards it.
type ownRecords struct {
	m      map[string]*ownParticipant
	hosted int // participants hosted here (external ones are not)
}

// ownParticipant is what this node wrote about one of its participants.
type ownParticipant struct {
	typ, gatewayURL string
	online          bool
	sessions        map[string]struct{}
}

func newOwnRecords() ownRecords { return ownRecords{m: map[string]*ownParticipant{}} }

func (o *ownParticipant) participantRecord(id string) record {
	return record{Participant: id, Type: o.typ, Online: o.online, GatewayURL: o.gatewayURL}
}

func (o *ownParticipant) memberRecord(id, session string) record {
	return record{Participant: id, Session: session, Type: o.typ, GatewayURL: o.gatewayURL}
}

// add makes participant id, with no sessions yet.
func (r *ownRecords) add(id, typ, gatewayURL string, online bool) *ownParticipant {
	o := &ownParticipant{typ: typ, gatewayURL: gatewayURL, online: online, sessions: map[string]struct{}{}}
	r.m[id] = o
	if gatewayURL == "" {
		r.hosted++
	}
	return o
}

// put replaces participant e.Participant with e, sessions included: the
// participant record if its type, online flag or gateway URL changed, and
// one membership record per session joined or left (all of them when the
// type or URL, which they carry, changed).
func (r *ownRecords) put(e Entry) []record {
	id := e.Participant
	var changed []record
	old := r.m[id]
	if old != nil && old.gatewayURL != e.GatewayURL {
		changed = r.remove(id) // external ↔ hosted: written and counted anew
		old = nil
	}
	cur := old
	if cur == nil {
		cur = r.add(id, e.Type, e.GatewayURL, e.Online)
		changed = append(changed, cur.participantRecord(id))
	}
	resendAll := cur.typ != e.Type
	if resendAll || cur.online != e.Online {
		cur.typ, cur.online = e.Type, e.Online
		changed = append(changed, cur.participantRecord(id))
	}
	want := make(map[string]struct{}, len(e.Sessions))
	for _, s := range e.Sessions {
		want[s] = struct{}{}
		if _, had := cur.sessions[s]; resendAll || !had {
			changed = append(changed, cur.memberRecord(id, s))
		}
	}
	for s := range cur.sessions {
		if _, keep := want[s]; !keep {
			changed = append(changed, record{Participant: id, Session: s, Gone: true})
		}
	}
	cur.sessions = want
	return changed
}

// set makes or updates participant id without touching its sessions.
func (r *ownRecords) set(id, typ string, online bool) []record {
	o := r.m[id]
	switch {
	case o == nil:
		o = r.add(id, typ, "", online)
	case o.typ == typ && o.online == online:
		return nil
	case o.typ != typ:
		return r.put(Entry{Participant: id, Type: typ, Online: online, GatewayURL: o.gatewayURL, Sessions: o.sortedSessions()})
	default:
		o.online = online
	}
	return []record{o.participantRecord(id)}
}

// join adds session to participant id (made, offline, if new here).
func (r *ownRecords) join(id, typ, session string) []record {
	var changed []record
	o := r.m[id]
	if o == nil {
		o = r.add(id, typ, "", false)
		changed = append(changed, o.participantRecord(id))
	}
	if _, in := o.sessions[session]; in {
		return changed
	}
	o.sessions[session] = struct{}{}
	return append(changed, o.memberRecord(id, session))
}

// leave takes session from participant id.
func (r *ownRecords) leave(id, session string) []record {
	o := r.m[id]
	if o == nil {
		return nil
	}
	if _, in := o.sessions[session]; !in {
		return nil
	}
	delete(o.sessions, session)
	return []record{{Participant: id, Session: session, Gone: true}}
}

// remove forgets participant id: its participant record and every
// membership record go.
func (r *ownRecords) remove(id string) []record {
	o := r.m[id]
	if o == nil {
		return nil
	}
	delete(r.m, id)
	if o.gatewayURL == "" {
		r.hosted--
	}
	out := make([]record, 0, 1+len(o.sessions))
	out = append(out, record{Participant: id, Gone: true})
	for s := range o.sessions {
		out = append(out, record{Participant: id, Session: s, Gone: true})
	}
	return out
}

// forEach calls fn with every record this node wrote.
func (r *ownRecords) forEach(fn func(record)) {
	for id, o := range r.m {
		fn(o.participantRecord(id))
		for s := range o.sessions {
			fn(o.memberRecord(id, s))
		}
	}
}

// sessionsOf lists participant id's sessions in order (none when it is
// not here).
func (r *ownRecords) sessionsOf(id string) []string {
	if o := r.m[id]; o != nil {
		return o.sortedSessions()
	}
	return nil
}

func (o *ownParticipant) sortedSessions() []string { return slices.Sorted(maps.Keys(o.sessions)) }

// localWrites is the write half of Cluster, shared by Gossip and Local:
// each write changes this node's own records through change, which
// applies them (Local) or queues them for their owners (Gossip). The
// writes never block on the network.
type localWrites struct {
	change func(func(*ownRecords) []record)
}

// PutLocal records this node's entry for a participant, all of its
// sessions included (the externals registry writes its entries whole).
func (w localWrites) PutLocal(e Entry) { w.change(func(o *ownRecords) []record { return o.put(e) }) }

// SetLocal records a participant of this node, or a change of its type or
// online state; its sessions are unchanged.
func (w localWrites) SetLocal(id, typ string, online bool) {
	w.change(func(o *ownRecords) []record { return o.set(id, typ, online) })
}

// JoinLocal records that a participant of this node joined session: one
// record for the session's owners, whatever its other sessions.
func (w localWrites) JoinLocal(id, typ, session string) {
	w.change(func(o *ownRecords) []record { return o.join(id, typ, session) })
}

// LeaveLocal records that a participant of this node left session.
func (w localWrites) LeaveLocal(id, session string) {
	w.change(func(o *ownRecords) []record { return o.leave(id, session) })
}

// DeleteLocal records that one of this node's participants is gone.
func (w localWrites) DeleteLocal(id string) {
	w.change(func(o *ownRecords) []record { return o.remove(id) })
}
