package membership

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// The home side of the directory: this node is the only writer of its
// participants' records. PutLocal, SetLocal, JoinLocal, LeaveLocal and
// DeleteLocal turn a change into the records it touches (own.go: a join is
// one membership record, whatever the participant's other sessions) and
// queue them; pushLoop sends them, in one request per owner node, to the
// owners of their keys, and Sync waits for that. The same loop
// re-registers records whose owners changed when the members did, and
// now and then sends each owner a digest of what it should hold
// (anti-entropy).

// writer is the home side's state, guarded by Gossip.mu.
type writer struct {
	own     ownRecords
	pending []record // changes not yet sent, in order
	// resync: nodes that get all of their records again, as a replace, at
	// the next round (they joined, restarted, or missed a push).
	resync map[string]bool
	// missed: nodes in resync because a push to them failed: they are sent
	// their replace even when it is empty (it drops what they missed the
	// removal of).
	missed map[string]bool
	// placedOn: the live nodes the records were last placed by; when the
	// members change, a record's owners under both lists are compared.
	placedOn []string
	lastFull time.Time
	queued   uint64        // sequence of the newest queued change
	pushed   uint64        // sequence of the newest change sent to its owners
	pushedCh chan struct{} // closed and replaced whenever pushed advances
}

func newWriter() writer {
	return writer{own: newOwnRecords(), resync: map[string]bool{}, missed: map[string]bool{}, pushedCh: make(chan struct{})}
}

// batch is what one round sends one node.
type batch struct {
	kind    byte
	records []record
	digest  digest // msgDigest
	msg     []byte // already encoded (a leave)
}

// change applies fn to this node's own records and queues the records it
// changed.
func (g *Gossip) change(fn func(*ownRecords) []record) {
	g.mu.Lock()
	defer g.mu.Unlock()
	changed := fn(&g.w.own)
	g.hosted.Store(int64(g.w.own.hosted))
	if len(changed) == 0 {
		return
	}
	g.w.pending = append(g.w.pending, changed...)
	g.w.queued++
	g.wakeWriter()
}

func (g *Gossip) wakeWriter() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// Sync waits until the local changes made so far have reached the owners
// of the records they touch, or SyncTimeout or ctx ends. It reports
// whether they were sent.
func (g *Gossip) Sync(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.SyncTimeout)
	defer cancel()
	g.mu.Lock()
	target := g.w.queued
	for g.w.pushed < target {
		ch := g.w.pushedCh
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		case <-g.stop:
			return false
		}
		g.mu.Lock()
	}
	g.mu.Unlock()
	return true
}

// retryInterval: how often the writer looks for owners that missed a push
// (and whether the anti-entropy round is due).
const retryInterval = time.Second

// pushLoop is the only goroutine that sends this node's records.
func (g *Gossip) pushLoop() {
	defer g.wg.Done()
	tick := time.NewTicker(retryInterval)
	defer tick.Stop()
	for {
		full := false
		select {
		case <-g.stop:
			return
		case <-g.wake:
		case now := <-tick.C:
			g.mu.Lock()
			full = now.Sub(g.w.lastFull) >= g.cfg.AntiEntropyInterval
			idle := len(g.w.resync) == 0 && len(g.w.pending) == 0
			g.mu.Unlock()
			if !full && idle {
				continue
			}
		}
		batches, seq := g.takeRound(full)
		failed := g.send(batches)
		g.mu.Lock()
		for _, n := range failed {
			g.w.resync[n], g.w.missed[n] = true, true
		}
		if seq > g.w.pushed {
			g.w.pushed = seq
			close(g.w.pushedCh)
			g.w.pushedCh = make(chan struct{})
		}
		g.mu.Unlock()
	}
}

// takeRound builds this round's batches, by owner node: the queued
// changes, the records whose owners changed since the last round, a
// replace of everything a node owns of ours for the nodes in resync, and
// in the anti-entropy round (full) a digest for every other owner.
// Records for this node's own keys are applied here at once.
func (g *Gossip) takeRound(full bool) (map[string]*batch, uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.cfg.Replicas
	nodes := g.liveNodesLocked()
	live := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		live[n] = true
	}
	resync, missed := g.w.resync, g.w.missed
	g.w.resync, g.w.missed = map[string]bool{}, map[string]bool{}
	if full {
		g.w.lastFull = time.Now()
	}
	delete(resync, g.cfg.NodeName) // this node's own store never misses a change
	for n := range resync {
		if !live[n] {
			delete(resync, n)
		}
	}
	batches := map[string]*batch{}
	add := func(node string, kind byte, rec record) {
		b := batches[node]
		if b == nil {
			b = &batch{kind: kind}
			batches[node] = b
		}
		b.records = append(b.records, rec)
	}
	for n := range resync {
		batches[n] = &batch{kind: msgReplace}
	}
	old := g.w.placedOn
	moved := !slices.Equal(old, nodes)
	g.w.placedOn = nodes
	if moved || len(resync) > 0 {
		g.w.own.forEach(func(rec record) {
			key := rec.key()
			now := owners(key, nodes, r)
			var before []string
			if moved {
				before = owners(key, old, r)
			}
			for _, n := range now {
				if resync[n] || moved && !slices.Contains(before, n) {
					add(n, msgUpdates, rec)
				}
			}
			for _, n := range before {
				if live[n] && !resync[n] && !slices.Contains(now, n) {
					gone := rec
					gone.Gone = true
					add(n, msgUpdates, gone)
				}
			}
		})
	}
	for _, rec := range g.w.pending {
		targets := owners(rec.key(), nodes, r)
		if moved && rec.Gone {
			// A record removed in the round its owners changed: the owners
			// that lost the key still hold it, and the diff above (over the
			// records that remain) does not name it.
			for _, n := range owners(rec.key(), old, r) {
				if live[n] && !slices.Contains(targets, n) {
					targets = append(targets, n)
				}
			}
		}
		for _, n := range targets {
			if !resync[n] {
				add(n, msgUpdates, rec)
			}
		}
	}
	g.w.pending = nil
	if full {
		g.addDigests(batches, nodes)
	}
	for n, b := range batches {
		if len(b.records) == 0 && b.kind != msgDigest && !missed[n] {
			// A node that joined or restarted holds nothing of ours, and one
			// that owns none of our keys was sent their removal when they
			// moved: an empty replace would only cost a request.
			delete(batches, n)
		}
	}
	if b := batches[g.cfg.NodeName]; b != nil {
		g.held.apply(b.kind, homeMessage{Node: g.cfg.NodeName, Epoch: g.epoch, Records: b.records})
		delete(batches, g.cfg.NodeName)
	}
	return batches, g.w.queued
}

// addDigests adds, for each owner of some of this node's records that gets
// nothing else this round, a digest of what it should hold of them: an
// owner that holds something else answers ErrDigestMismatch, and the next
// round sends it a replace. So the anti-entropy round costs one small
// request per owner, and a re-send only where something was missed.
func (g *Gossip) addDigests(batches map[string]*batch, nodes []string) {
	digests := map[string]*digest{}
	g.w.own.forEach(func(rec record) {
		for _, n := range owners(rec.key(), nodes, g.cfg.Replicas) {
			if n == g.cfg.NodeName || batches[n] != nil {
				continue
			}
			d := digests[n]
			if d == nil {
				d = &digest{}
				digests[n] = d
			}
			d.add(rec)
		}
	})
	for n, d := range digests {
		batches[n] = &batch{kind: msgDigest, digest: *d}
	}
}

// send pushes each batch to its node with Push, in parallel, and waits for
// them (bounded by SyncTimeout). It returns the nodes that did not take
// theirs. Nodes whose URL is not known yet are skipped: they get their
// records when they join.
func (g *Gossip) send(batches map[string]*batch) (failed []string) {
	if g.cfg.Push == nil || len(batches) == 0 {
		return nil
	}
	type target struct {
		node, url string
		msg       []byte
	}
	var targets []target
	g.mu.Lock()
	for node, b := range batches {
		m, ok := g.nodes[node]
		if !ok || m.URL == "" {
			continue
		}
		msg := b.msg
		if msg == nil {
			msg = encodeMessage(b.kind, homeMessage{Node: g.cfg.NodeName, Epoch: g.epoch, Records: b.records,
				Count: b.digest.count, Hash: b.digest.hash})
		}
		targets = append(targets, target{node, m.URL, msg})
	}
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.SyncTimeout)
	defer cancel()
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for _, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.pushOne(ctx, t.url, t.msg); err != nil {
				g.log.Debug("a directory push failed; retried with everything of ours it keeps", "peer", t.node, "err", err)
				mu.Lock()
				failed = append(failed, t.node)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failed
}

// pushOne pushes msg to one peer. A peer that has not heard of this node
// yet (it joined a moment ago) is asked again, shortly, until ctx ends:
// gossip brings it the news within a few rounds.
func (g *Gossip) pushOne(ctx context.Context, url string, msg []byte) error {
	sig := g.Sign(msg)
	wait := 10 * time.Millisecond
	for {
		err := g.cfg.Push(ctx, url, msg, sig)
		if !errors.Is(err, ErrUnknownNode) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-g.stop:
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}
