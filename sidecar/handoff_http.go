package sidecar

// The HTTP side of a hand-off: the cluster endpoints a node taking a
// participant over calls on its old home (release, confirm, restore) and
// the one a draining node calls to offer its participants (takeover). The
// decisions are in package routing (handoff.go).

import (
	"net/http"

	"github.com/switchyard-gw/switchyard/internal/ident"
	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/sidecar/routing"
)

const (
	releasePath  = "/v1/gateway/cluster/release"
	restorePath  = "/v1/gateway/cluster/restore"
	takeoverPath = "/v1/gateway/cluster/takeover"
)

// handleRelease hands a participant's state to the peer taking it over,
// and keeps a copy until that peer confirms (a second release with
// confirm), restores it, or the copy expires. Asked again by the same peer
// while the participant is not back here, it answers the same state.
func (n *Node) handleRelease(w http.ResponseWriter, r *http.Request) error {
	ref, err := readParticipantRef(w, r)
	if err != nil {
		return err
	}
	if ref.Confirm {
		n.gw.Confirmed(ref.ParticipantID, ref.From)
		wire.WriteJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
		return nil
	}
	st, err := n.gw.ReleaseHere(ref)
	if err != nil {
		return err
	}
	n.log.Debug("released a participant", "participant", ref.ParticipantID, "to", ref.From, "events", len(st.Events))
	return respond(w, st)
}

// handleRestore takes back a participant whose transfer to the asking peer
// failed: the state this node held for it, and the deliveries the peer
// buffered meanwhile.
func (n *Node) handleRestore(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r, n.gw.StateLimit())
	if err != nil {
		return err
	}
	var req routing.RestoreRequest
	if err := wire.DecodeJSON(body, &req); err != nil {
		return err
	}
	if err := wire.CheckID(req.ParticipantID, "participant_id", ident.MaxParticipantID); err != nil {
		return err
	}
	if req.From == "" {
		return wire.FieldError(wire.CodeMissingField, "from", "from names the node that gives the participant back")
	}
	// Under the release lock: a give-back that overtakes the release it
	// follows (cut on its way, still running here) waits for its hold,
	// instead of finding nothing to restore into.
	restored, held := n.gw.RestoreHere(req)
	if !restored {
		return wire.NewError(http.StatusNotFound, "participant_not_found", "", "this node holds nothing of the participant")
	}
	n.log.Info("took a participant back after a failed hand-off", "participant", req.ParticipantID, "from", req.From,
		"held", held, "buffered", len(req.Events))
	wire.WriteJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
	return nil
}

// handleTakeover takes a participant over from a draining peer. It answers
// 503 when the participant stayed there (given back after a failed
// transfer): the draining peer then asks the next successor.
func (n *Node) handleTakeover(w http.ResponseWriter, r *http.Request) error {
	ref, err := readParticipantRef(w, r)
	if err != nil {
		return err
	}
	if ref.From == "" {
		return wire.FieldError(wire.CodeMissingField, "from", "from names the node to take the participant from")
	}
	if n.draining.Load() {
		return wire.NewError(http.StatusServiceUnavailable, "draining", "", "this node is draining too; ask another")
	}
	typ := "ai"
	entries, _ := n.cluster.Participant(r.Context(), ref.ParticipantID)
	for _, e := range entries {
		if e.Node == ref.From && e.Type != "" {
			typ = e.Type
		}
	}
	sessions, _ := n.cluster.HomeSessions(r.Context(), ref.From, ref.ParticipantID)
	if err := n.gw.Takeover(r.Context(), ref.ParticipantID, typ, sessions, []string{ref.From}, false); err != nil {
		return err
	}
	wire.WriteJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
	return nil
}

func readParticipantRef(w http.ResponseWriter, r *http.Request) (routing.ParticipantRef, error) {
	body, err := readBody(w, r, participantRefLimit)
	if err != nil {
		return routing.ParticipantRef{}, err
	}
	var ref routing.ParticipantRef
	if err := wire.DecodeJSON(body, &ref); err != nil {
		return ref, err
	}
	if err := wire.CheckID(ref.ParticipantID, "participant_id", ident.MaxParticipantID); err != nil {
		return ref, err
	}
	return ref, nil
}
