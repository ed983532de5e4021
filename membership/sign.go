package membership

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
)

// ErrNotSender is returned by HandlePush for a message whose signature
// was not made by the node the message names: whoever pushed it does not
// speak for that node, and nothing was applied.
var ErrNotSender = errors.New("the message is not signed by the node it names")

// ErrUnknownNode is returned by HandlePush for a message from a node that
// is not (or not yet) a member here: nothing was applied. A home that
// just joined may be told so by an owner that has not heard of it yet;
// GossipConfig.Push returns it (wrapped) so that the home tries again.
var ErrUnknownNode = errors.New("the message's node is not a member here")

// ErrDigestMismatch is returned by HandlePush for an anti-entropy digest
// that does not match what this node holds of the home: the home then
// sends everything this node should hold of it (GossipConfig.Push returns
// it, wrapped).
var ErrDigestMismatch = errors.New("the records held here do not match the digest")

// Sign is this node's signature of a directory message it pushes, in
// base64 (GossipConfig.Push carries it; the receiver checks it with
// HandlePush).
func (g *Gossip) Sign(msg []byte) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(g.signer, msg))
}

func (g *Gossip) publicKey() string {
	return base64.StdEncoding.EncodeToString(g.signer.Public().(ed25519.PublicKey))
}

// HandlePush applies a directory message a peer pushed (see
// GossipConfig.Push). sig must be the signature of data by the node the
// message names, checked against the public key that node gossips: each
// node is the only writer of its own records, so a message naming another
// node than its signer is refused with ErrNotSender and changes nothing.
// A message from a node that is not a member is refused with
// ErrUnknownNode.
func (g *Gossip) HandlePush(data []byte, sig string) error {
	kind, m, err := decodeMessage(data)
	if err != nil {
		return err
	}
	if m.Node == g.cfg.NodeName {
		return ErrNotSender // only this node speaks for itself; a peer never pushes our own records
	}
	g.mu.Lock()
	peer, member := g.nodes[m.Node]
	g.mu.Unlock()
	if member && !validSignature(peer.PublicKey, data, sig) {
		return ErrNotSender
	}
	return g.apply(kind, m)
}

// validSignature reports whether sig (base64) is a signature of data by
// the Ed25519 public key pk (base64).
func validSignature(pk string, data []byte, sig string) bool {
	key, err := base64.StdEncoding.DecodeString(pk)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return false
	}
	s, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(s) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(key, data, s)
}

// apply takes a member's directory message. The records are applied under
// g.mu so that a node's departure (which drops its records) cannot
// interleave with a late message of it.
func (g *Gossip) apply(kind byte, m homeMessage) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if d, gone := g.departed[m.Node]; gone && kind == msgLeaving {
		d.state = StateLeft // memberlist's own leave message came first
		g.departed[m.Node] = d
		return nil
	}
	peer, member := g.nodes[m.Node]
	if !member {
		// Not (or no longer) a member: a late message from a node that left,
		// one from a stranger, or one from a node whose join has not reached
		// this node yet (its home tries again).
		g.log.Debug("refused a directory message from a non-member", "peer", m.Node)
		return ErrUnknownNode
	}
	if m.Epoch < peer.Epoch {
		return nil // from an earlier life of that node: a late "leaving" must not drop the new life's records
	}
	if kind == msgLeaving {
		g.leaving[m.Node] = m.Epoch
		g.held.apply(kind, m)
		return nil
	}
	if kind == msgDigest {
		if !g.held.matches(m.Node, m.Epoch, digest{m.Count, m.Hash}) {
			return ErrDigestMismatch
		}
		return nil
	}
	if ep, ok := g.leaving[m.Node]; ok {
		if m.Epoch <= ep {
			return nil // the life that is leaving
		}
		// A new life under the same name (a restarted StatefulSet pod)
		// whose join memberlist saw as an update, not a leave and a join.
		delete(g.leaving, m.Node)
	}
	g.held.apply(kind, m)
	return nil
}
