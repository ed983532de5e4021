package membership

import (
	"encoding/json"

	"github.com/hashicorp/memberlist"
)

// The memberlist callbacks live in these small adapters. memberlist runs
// them on its own goroutines: they never block and never call back into
// memberlist.

type delegate struct{ g *Gossip }

var _ memberlist.Delegate = (*delegate)(nil)

func (d *delegate) NodeMeta(limit int) []byte {
	pk := d.g.publicKey()
	b, _ := json.Marshal(meta{URL: d.g.cfg.URL, Version: d.g.cfg.Version, Epoch: d.g.epoch, PublicKey: pk})
	if len(b) > limit { // a URL that long is refused by NewGossip's caller; never send a cut one
		b, _ = json.Marshal(meta{Epoch: d.g.epoch, PublicKey: pk})
	}
	return b
}

func (d *delegate) NotifyMsg(b []byte) { d.g.handleMessage(b) }

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.g.queue.GetBroadcasts(overhead, limit)
}

// LocalState is our full state for memberlist's push/pull anti-entropy.
func (d *delegate) LocalState(bool) []byte {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	return d.g.fullStateLocked()
}

func (d *delegate) MergeRemoteState(buf []byte, _ bool) { d.g.handleMessage(buf) }

type events struct{ g *Gossip }

var _ memberlist.EventDelegate = (*events)(nil)

func (e *events) NotifyJoin(n *memberlist.Node)   { e.g.nodeJoined(n) }
func (e *events) NotifyLeave(n *memberlist.Node)  { e.g.nodeLeft(n) }
func (e *events) NotifyUpdate(n *memberlist.Node) { e.g.nodeUpdated(n) }

// broadcast is one participant's change, named by the participant so that a
// newer change replaces an older one still queued.
type broadcast struct {
	name string
	msg  []byte
}

var _ memberlist.NamedBroadcast = (*broadcast)(nil)

func (b *broadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(memberlist.NamedBroadcast)
	return ok && o.Name() == b.name
}
func (b *broadcast) Name() string    { return b.name }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}
