package membership

import (
	"encoding/json"

	"github.com/hashicorp/memberlist"
)

// The memberlist callbacks live in these small adapters. memberlist runs
// them on its own goroutines: they never block and never call back into
// memberlist. The directory does not travel by gossip (no broadcasts, no
// push/pull state): memberlist carries membership and the node metadata
// only.

type delegate struct{ g *Gossip }

var _ memberlist.Delegate = (*delegate)(nil)

func (d *delegate) NodeMeta(limit int) []byte {
	m := meta{URL: d.g.cfg.URL, Version: d.g.cfg.Version, Epoch: d.g.epoch, PublicKey: d.g.publicKey(),
		Participants: int(d.g.hosted.Load())}
	b, _ := json.Marshal(m)
	if len(b) > limit { // a URL that long is refused by NewGossip's caller; never send a cut one
		b, _ = json.Marshal(meta{Epoch: m.Epoch, PublicKey: m.PublicKey})
	}
	return b
}

// NotifyMsg: the directory does not travel by gossip, so a user message
// is either a stray from an older version or garbage.
func (d *delegate) NotifyMsg(b []byte) {
	if _, _, err := decodeMessage(b); err != nil {
		d.g.log.Warn("dropped a gossip message that does not decode", "err", err, "bytes", len(b))
	}
}

func (d *delegate) GetBroadcasts(_, _ int) [][]byte { return nil }
func (d *delegate) LocalState(bool) []byte          { return nil }
func (d *delegate) MergeRemoteState([]byte, bool)   {}

type events struct{ g *Gossip }

var _ memberlist.EventDelegate = (*events)(nil)

func (e *events) NotifyJoin(n *memberlist.Node)   { e.g.nodeJoined(n) }
func (e *events) NotifyLeave(n *memberlist.Node)  { e.g.nodeLeft(n) }
func (e *events) NotifyUpdate(n *memberlist.Node) { e.g.nodeUpdated(n) }
