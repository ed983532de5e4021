package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// ErrUnreachable is returned by a lookup when no owner of a key answered:
// the directory cannot say where the key's participants are.
var ErrUnreachable = errors.New("no owner of the directory record answered")

// Participant returns where participant id lives: one entry per node that
// hosts it or knows it as external. Sessions are not included (see
// HomeSessions).
func (g *Gossip) Participant(ctx context.Context, id string) ([]Entry, error) {
	found, err := g.lookup(ctx, []string{participantKey(id)}, "")
	return found[participantKey(id)], err
}

// Participants is Participant for several ids, in one request per owner.
func (g *Gossip) Participants(ctx context.Context, ids []string) (map[string][]Entry, error) {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = participantKey(id)
	}
	found, err := g.lookup(ctx, keys, "")
	out := make(map[string][]Entry, len(ids))
	for _, id := range ids {
		out[id] = found[participantKey(id)]
	}
	return out, err
}

// Session returns the members of session (without Online), leaving out
// the participants node hosts when node is set; external participants
// node learned of stay in.
func (g *Gossip) Session(ctx context.Context, session, except string) ([]Entry, error) {
	found, err := g.lookup(ctx, []string{sessionKey(session)}, except)
	return found[sessionKey(session)], err
}

// lookup asks the owners of keys, in parallel (one request per owner
// node; this node answers its own part from memory), and returns the
// union of their answers: while ownership moves, at least one current
// owner of a key has its records. A key none of whose owners answered,
// or of which no owner that answered holds anything while another did not
// answer, makes the lookup fail with ErrUnreachable (with what was found).
func (g *Gossip) lookup(ctx context.Context, keys []string, except string) (map[string][]Entry, error) {
	g.mu.Lock()
	nodes := g.liveNodesLocked()
	urls := make(map[string]string, len(g.nodes))
	for name, m := range g.nodes {
		urls[name] = m.URL
	}
	g.mu.Unlock()
	ask := map[string][]string{} // node → keys
	for _, k := range keys {
		for _, n := range owners(k, nodes, g.cfg.Replicas) {
			ask[n] = append(ask[n], k)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.SyncTimeout)
	defer cancel()
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		found    = make(map[string][]Entry, len(keys))
		answered = make(map[string]bool, len(keys))
		held     = make(map[string]bool, len(keys)) // some owner holds records of the key
		lastErr  error
	)
	take := func(ans lookupAnswer, asked []string) {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range asked {
			answered[k] = true
			found[k] = union(found[k], ans.Records[k])
			held[k] = held[k] || len(ans.Records[k]) > 0 || ans.Skipped[k] > 0
		}
	}
	for node, ks := range ask {
		if node == g.cfg.NodeName {
			take(g.answer(lookupRequest{Keys: ks, Except: except}), ks)
			continue
		}
		for len(ks) > 0 { // at most maxLookupKeys a request
			chunk := ks[:min(len(ks), maxLookupKeys)]
			ks = ks[len(chunk):]
			wg.Add(1)
			go func() {
				defer wg.Done()
				ans, err := g.fetch(ctx, urls[node], lookupRequest{Keys: chunk, Except: except})
				if err != nil {
					g.log.Debug("a directory lookup failed; the other owners answer", "peer", node, "err", err)
					mu.Lock()
					lastErr = err
					mu.Unlock()
					return
				}
				take(ans, chunk)
			}()
		}
	}
	wg.Wait()
	for _, k := range keys {
		// Nothing found while an owner did not answer: that owner may be
		// the one that has it. Only answers from every owner can say a
		// key has no record.
		if !answered[k] || lastErr != nil && !held[k] {
			return found, fmt.Errorf("%w: %s: %v", ErrUnreachable, k, lastErr)
		}
	}
	return found, nil
}

func (g *Gossip) fetch(ctx context.Context, url string, req lookupRequest) (lookupAnswer, error) {
	var ans lookupAnswer
	if g.cfg.Fetch == nil || url == "" {
		return ans, errors.New("the peer's address is not known")
	}
	body, _ := json.Marshal(req)
	raw, err := g.cfg.Fetch(ctx, url, body)
	if err != nil {
		return ans, err
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return ans, fmt.Errorf("decode the lookup answer: %w", err)
	}
	return ans, nil
}

// union adds the entries of b missing from a (same participant and node),
// keeping the order by participant then node.
func union(a, b []Entry) []Entry {
	if len(a) == 0 {
		return b
	}
	for _, e := range b {
		if !slices.ContainsFunc(a, func(x Entry) bool { return x.Participant == e.Participant && x.Node == e.Node }) {
			a = append(a, e)
		}
	}
	sortEntries(a)
	return a
}

// HomeSessions returns the sessions of participant id as its home node
// has them (a takeover prepares the participant in them before the old
// home lets it go). Sessions are not in the participant record, so that a
// join costs one small record whatever the participant's other sessions.
func (g *Gossip) HomeSessions(ctx context.Context, node, id string) ([]string, error) {
	if node == g.cfg.NodeName {
		return g.ownSessions(id), nil
	}
	url, ok := g.NodeURL(node)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not a live member", ErrUnreachable, node)
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.SyncTimeout)
	defer cancel()
	ans, err := g.fetch(ctx, url, lookupRequest{Sessions: []string{id}})
	return ans.Sessions[id], err
}

func (g *Gossip) ownSessions(id string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.w.own.sessionsOf(id)
}

// HandleLookup answers a peer's lookup (see GossipConfig.Fetch) from the
// records this node keeps as an owner, and from its own participants for
// HomeSessions.
func (g *Gossip) HandleLookup(data []byte) ([]byte, error) {
	var req lookupRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, fmt.Errorf("decode the lookup: %w", err)
	}
	if len(req.Keys)+len(req.Sessions) > maxLookupKeys {
		return nil, fmt.Errorf("a lookup asks for at most %d keys", maxLookupKeys)
	}
	return json.Marshal(g.answer(req))
}

// answer looks req up in this node's records.
func (g *Gossip) answer(req lookupRequest) lookupAnswer {
	ans := lookupAnswer{Records: make(map[string][]Entry, len(req.Keys))}
	for _, k := range req.Keys {
		es, skipped := g.held.lookup(k, req.Except)
		ans.Records[k] = append([]Entry{}, es...) // [] rather than null
		if skipped > 0 {
			if ans.Skipped == nil {
				ans.Skipped = map[string]int{}
			}
			ans.Skipped[k] = skipped
		}
	}
	if len(req.Sessions) > 0 {
		ans.Sessions = make(map[string][]string, len(req.Sessions))
		for _, id := range req.Sessions {
			ans.Sessions[id] = append([]string{}, g.ownSessions(id)...)
		}
	}
	return ans
}

// HeldRecords is how many directory records this node keeps as an owner
// (the metric switchyard_directory_records), and how many of them node
// wrote.
func (g *Gossip) HeldRecords(node string) (total, of int) {
	return g.held.size(), g.held.homeCount(node)
}
