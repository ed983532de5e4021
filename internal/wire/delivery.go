package wire

import (
	"bytes"

	"github.com/switchyard-gw/switchyard/internal/ident"
)

// DeliveryRequest is the body of POST /v1/gateway/deliveries.
type DeliveryRequest struct {
	RecipientIDs        []string
	SessionID           string
	RecipientGatewayURL string
	Event               Event
}

// DecodedDelivery is the body of POST /v1/gateway/deliveries, decoded by
// DecodeDelivery: pointers tell absent fields from empty ones.
type DecodedDelivery struct {
	RecipientID         *string       `json:"recipient_id"`
	RecipientIDs        []string      `json:"recipient_ids"`
	SessionID           *string       `json:"session_id"`
	RecipientGatewayURL *string       `json:"recipient_gateway_url"`
	Event               *DecodedEvent `json:"event"`

	values [3]string // what the string fields point at (see DecodedEvent)
}

// DecodeDelivery vets and decodes a delivery body into w in one pass, as
// DecodeEvent does a submit's; the event's fields are named under
// "event.". FuzzDeliveryDecoding holds it to CheckJSON + encoding/json.
func DecodeDelivery(body []byte, w *DecodedDelivery) *Error {
	return decodeTopLevel(body, w)
}

func (w *DecodedDelivery) decodeField(s *jsonChecker, key, raw []byte) {
	switch string(key) {
	case "recipient_id":
		s.decodeString(key, raw, &w.RecipientID, &w.values[0])
	case "session_id":
		s.decodeString(key, raw, &w.SessionID, &w.values[1])
	case "recipient_gateway_url":
		s.decodeString(key, raw, &w.RecipientGatewayURL, &w.values[2])
	case "recipient_ids":
		w.RecipientIDs = nil
		switch raw[0] {
		case 'n':
		case '[':
			w.RecipientIDs = decodeStrings(s, "recipient_ids", raw)
		default:
			s.wrongType("recipient_ids", "array")
		}
	case "event":
		switch raw[0] {
		case 'n':
			w.Event = nil
		case '{':
			w.Event = new(DecodedEvent)
			if err := DecodeEvent(raw, w.Event); err != nil && s.typeErr == nil {
				err.Field = "event." + err.Field // only a type error: the body passed the checker
				s.typeErr = err
			}
		default:
			s.wrongType("event", "object")
		}
	}
}

// decodeStrings decodes a checked JSON array of strings, as encoding/json
// does into a []string: null elements are "", other types a type error
// naming field. The strings share one allocation: a delivery names up to
// thousands of recipients.
func decodeStrings(s *jsonChecker, field string, raw []byte) []string {
	var text []byte                     // every element's decoded text, back to back
	var ends []int                      // where each element's text ends in text
	e := jsonChecker{data: raw, pos: 1} // past '['
	for {
		e.space()
		if e.data[e.pos] == ']' {
			break
		}
		start := e.pos
		_ = e.value()
		switch v := e.data[start:e.pos]; v[0] {
		case '"':
			if bytes.IndexByte(v, '\\') < 0 {
				text = append(text, v[1:len(v)-1]...)
			} else {
				decoded, _ := unquote(v)
				text = append(text, decoded...)
			}
		case 'n': // null: the zero string
		default:
			s.wrongType(field, "string")
		}
		ends = append(ends, len(text))
		e.space()
		if e.data[e.pos] == ',' {
			e.pos++
		}
	}
	all := string(text)
	out := make([]string, len(ends))
	begin := 0
	for i, end := range ends {
		out[i], begin = all[begin:end], end
	}
	return out
}

func (w *DecodedDelivery) Validate(lim Limits) (DeliveryRequest, *Error) {
	var req DeliveryRequest
	switch {
	case w.RecipientID != nil:
		if err := CheckID(*w.RecipientID, "recipient_id", ident.MaxParticipantID); err != nil {
			return req, err
		}
		req.RecipientIDs = []string{*w.RecipientID}
	case len(w.RecipientIDs) > 0:
		seen := make(map[string]bool, len(w.RecipientIDs))
		for _, id := range w.RecipientIDs {
			if err := CheckID(id, "recipient_ids", ident.MaxParticipantID); err != nil {
				return req, err
			}
			if !seen[id] { // a recipient named twice still gets the event once
				seen[id] = true
				req.RecipientIDs = append(req.RecipientIDs, id)
			}
		}
	default:
		return req, FieldError(CodeMissingField, "recipient_id", "recipient_id is required")
	}
	if w.SessionID != nil {
		if err := CheckID(*w.SessionID, "session_id", ident.MaxSessionID); err != nil {
			return req, err
		}
		req.SessionID = *w.SessionID
	}
	if w.RecipientGatewayURL != nil {
		if err := CheckGatewayURL(*w.RecipientGatewayURL, "recipient_gateway_url"); err != nil {
			return req, err
		}
		req.RecipientGatewayURL = *w.RecipientGatewayURL
	}
	if w.Event == nil {
		return req, FieldError(CodeMissingField, "event", "event is required")
	}
	ev, err := w.Event.Validate("event.", lim)
	if err != nil {
		return req, err
	}
	req.Event = ev
	return req, nil
}
