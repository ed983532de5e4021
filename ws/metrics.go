package ws

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the hub's Prometheus collectors. Register them with
// Collectors; a hub made without Metrics gets unregistered ones.
type Metrics struct {
	Connections   prometheus.Gauge
	Participants  prometheus.Gauge
	MailboxEvents prometheus.Gauge
	Deliveries    prometheus.Counter
	SlowConsumers prometheus.Counter
}

// NewMetrics makes the hub's collectors, named switchyard_*.
func NewMetrics() *Metrics {
	return &Metrics{
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_connections_open", Help: "Open WebSocket connections on this node."}),
		Participants: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_participants", Help: "Participants homed on this node, online or within their offline window."}),
		MailboxEvents: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_mailbox_events", Help: "Events held in all mailboxes on this node (the queue depth)."}),
		Deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_ws_frames_delivered_total", Help: "Event frames written to WebSocket connections."}),
		SlowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_slow_consumers_total", Help: "Connections closed with 4000 because they fell behind."}),
	}
}

// Collectors lists the collectors for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Connections, m.Participants, m.MailboxEvents, m.Deliveries, m.SlowConsumers}
}
