package sidecar

import (
	"context"
	"slices"

	"github.com/switchyard-gw/switchyard/membership"
)

// dirParticipant is what a lookup through node n finds of participant id
// (nil when no owner of its record answered).
func dirParticipant(n *Node, id string) []membership.Entry {
	es, err := n.cluster.Participant(context.Background(), id)
	if err != nil {
		return nil
	}
	return es
}

// dirSession is what a lookup through node n finds of session's members.
func dirSession(n *Node, session string) []membership.Entry {
	es, err := n.cluster.Session(context.Background(), session, "")
	if err != nil {
		return nil
	}
	return es
}

// dirHomedOn reports whether any of the sessions' members, as node n's
// lookups find them, is homed on node.
func dirHomedOn(n *Node, node string, sessions ...string) bool {
	for _, s := range sessions {
		if slices.ContainsFunc(dirSession(n, s), func(e membership.Entry) bool { return e.Node == node }) {
			return true
		}
	}
	return false
}
