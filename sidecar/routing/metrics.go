package routing

import "github.com/prometheus/client_golang/prometheus"

// Metrics are what the routing core (Gateway) counts: the node's
// Metrics make and register them, the core only adds to them.
type Metrics struct {
	// Handoffs counts participants taken over from another node, by
	// result.
	Handoffs *prometheus.CounterVec
	// ExternalsDropped counts external participants dropped by reason:
	// expired (idle past --external-ttl), failing (the circuit breaker) or
	// suspended (another node's, skipped here for a while).
	ExternalsDropped *prometheus.CounterVec
	// Children of switchyard_deliveries_total that every delivery
	// touches, looked up once.
	DeliveredLocal, DeliveredPeer, DeliveredExternal prometheus.Counter
}
