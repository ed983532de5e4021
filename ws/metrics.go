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
	PingTimeouts  prometheus.Counter
	// MailboxBytes reads the hub's count of bytes held in mailboxes; the
	// count lives here so that the gauge needs no lock and no update per
	// delivery. One Metrics serves one Hub.
	MailboxBytes      prometheus.GaugeFunc
	MailboxBytesLimit prometheus.Gauge
	BudgetRefusals    prometheus.Counter

	mailboxBytes byteCount
}

// NewMetrics makes the hub's collectors, named switchyard_*.
func NewMetrics() *Metrics {
	m := &Metrics{
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
		PingTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_ws_ping_timeouts_total",
			Help: "Connections closed because they did not answer a ping within --ping-timeout (a client gone without closing)."}),
		MailboxBytesLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_mailbox_bytes_limit", Help: "The budget of bytes all mailboxes on this node may hold (--max-mailbox-bytes)."}),
		BudgetRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_mailbox_budget_refusals_total",
			Help: "Events (submits and deliveries from peers) refused because this node's mailboxes held their byte budget."}),
	}
	m.MailboxBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchyard_mailbox_bytes",
		Help: "Bytes held in all mailboxes on this node: each event counted once however many mailboxes share it, plus their slots."},
		func() float64 { return float64(m.mailboxBytes.load()) })
	return m
}

// Collectors lists the collectors for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Connections, m.Participants, m.MailboxEvents, m.Deliveries, m.SlowConsumers,
		m.PingTimeouts, m.MailboxBytes, m.MailboxBytesLimit, m.BudgetRefusals}
}
