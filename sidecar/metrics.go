package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/switchyard-gw/switchyard/ws"
)

// Metrics are the gateway's Prometheus collectors, in a registry of the
// node's own (several nodes may share a process in tests and dev mode).
type Metrics struct {
	Registry *prometheus.Registry
	Hub      *ws.Metrics

	Submits         *prometheus.CounterVec
	Deliveries      *prometheus.CounterVec
	RequestDuration *prometheus.HistogramVec
	Handoffs        *prometheus.CounterVec

	// Children of the vectors above that every submit touches, looked up
	// once.
	submitsOK                                        prometheus.Counter
	deliveredLocal, deliveredPeer, deliveredExternal prometheus.Counter
}

func newMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Hub:      ws.NewMetrics(),
		Submits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_submits_total",
			Help: "Submitted events by outcome: ok, or the error code of the answer.",
		}, []string{"outcome"}),
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_deliveries_total",
			Help: "Events handed to recipients, by path: local (a mailbox on this node), peer (accepted by the node hosting the recipient) or external (accepted by an external gateway).",
		}, []string{"path"}),
		Handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_handoffs_total",
			Help: "Participants taken over from another node, by result: taken, abandoned (another node had it), returned (the transfer failed; given back to the old home), or failed (started afresh).",
		}, []string{"result"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchyard_http_request_duration_seconds",
			Help:    "Latency of REST requests by route, method and status (WebSocket attaches excluded).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method", "status"}),
	}
	m.Registry.MustRegister(m.Submits, m.Deliveries, m.RequestDuration, m.Handoffs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.Registry.MustRegister(m.Hub.Collectors()...)
	m.submitsOK = m.Submits.WithLabelValues("ok")
	m.deliveredLocal = m.Deliveries.WithLabelValues("local")
	m.deliveredPeer = m.Deliveries.WithLabelValues("peer")
	m.deliveredExternal = m.Deliveries.WithLabelValues("external")
	return m
}

// recordSubmit counts one submit by its outcome.
func (m *Metrics) recordSubmit(err error) {
	if err == nil {
		m.submitsOK.Inc()
		return
	}
	m.Submits.WithLabelValues(asError(err).Code).Inc()
}
