package membership

import (
	"encoding/json"
	"time"

	"github.com/hashicorp/memberlist"
)

// Membership events, from memberlist's callbacks (delegates.go): they
// update the node list, drop a departed node's records, and wake the
// writer, which re-registers the records whose owners changed.

func (g *Gossip) nodeJoined(n *memberlist.Node) {
	var m meta
	if err := json.Unmarshal(n.Meta, &m); err != nil {
		g.log.Warn("a node's metadata does not decode", "peer", n.Name, "err", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nodes[n.Name] = m
	delete(g.departed, n.Name)
	delete(g.leaving, n.Name)
	if n.Name != g.cfg.NodeName {
		g.w.resync[n.Name] = true // it holds nothing of ours yet
		g.wakeWriter()
		g.log.Info("node joined", "peer", n.Name, "url", m.URL)
	}
}

func (g *Gossip) nodeLeft(n *memberlist.Node) {
	g.mu.Lock()
	defer g.mu.Unlock()
	state := StateDead
	if _, ok := g.leaving[n.Name]; ok {
		state = StateLeft
	}
	delete(g.leaving, n.Name)
	g.departed[n.Name] = departedNode{meta: g.nodes[n.Name], state: state, at: time.Now()}
	delete(g.nodes, n.Name)
	delete(g.w.resync, n.Name)
	delete(g.w.missed, n.Name)
	g.held.dropHome(n.Name)
	for name, d := range g.departed { // prune the old ones
		if time.Since(d.at) > g.cfg.DepartedRetention {
			delete(g.departed, name)
		}
	}
	g.wakeWriter() // the records it owned need their next owner
	g.log.Info("node left; its participants are no longer routed to", "peer", n.Name, "state", state)
}

func (g *Gossip) nodeUpdated(n *memberlist.Node) {
	var m meta
	if err := json.Unmarshal(n.Meta, &m); err != nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	old, known := g.nodes[n.Name]
	g.nodes[n.Name] = m
	if !known || m.Epoch == old.Epoch || n.Name == g.cfg.NodeName {
		return
	}
	// The node restarted under its name and memberlist saw the new life as
	// an update (its leave never reached us, or came after its rejoin):
	// forget the old life, as a leave and a join would have, and send the
	// new one its records.
	if ep, ok := g.leaving[n.Name]; ok && ep < m.Epoch {
		delete(g.leaving, n.Name)
	}
	g.held.dropHome(n.Name)
	g.w.resync[n.Name] = true
	g.wakeWriter()
	g.log.Info("node restarted", "peer", n.Name, "url", m.URL)
}
