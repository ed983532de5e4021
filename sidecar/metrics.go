package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/sidecar/routing"
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
	// Gateway are the collectors the routing core counts into.
	Gateway routing.Metrics

	submitsOK prometheus.Counter // the child every accepted submit touches, looked up once
}

// newMetrics makes the collectors; version is the node's (Config.Version),
// exported with the binary's VCS revision and Go version as
// switchyard_build_info.
func newMetrics(version string) *Metrics {
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
		Gateway: routing.Metrics{
			Handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "switchyard_handoffs_total",
				Help: "Participants taken over from another node, by result: taken, abandoned (another node had it), returned (the transfer failed; given back to the old home), or failed (started afresh).",
			}, []string{"result"}),
			ExternalsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "switchyard_external_participants_dropped_total",
				Help: "External participants this node dropped, by reason: expired (idle past --external-ttl), failing (their gateway failed --external-failure-limit deliveries in a row), or suspended (another node's, not routed to from here for --external-retry-after after as many failures).",
			}, []string{"reason"}),
		},
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchyard_http_request_duration_seconds",
			Help:    "Latency of REST requests by route, method and status (WebSocket attaches excluded).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method", "status"}),
	}
	m.Registry.MustRegister(m.Submits, m.Deliveries, m.RequestDuration, m.Gateway.Handoffs, m.Gateway.ExternalsDropped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.Registry.MustRegister(m.Hub.Collectors()...)
	build := ReadBuildInfo()
	revision := build.Revision
	if revision == "" {
		revision = "unknown"
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "switchyard_build_info",
		Help: "Always 1; the labels say what runs: the node's version, the VCS revision it was built from (unknown without one) and the Go version.",
	}, []string{"version", "revision", "go_version"})
	buildInfo.WithLabelValues(version, revision, build.GoVersion).Set(1)
	m.Registry.MustRegister(buildInfo)
	for _, reason := range []string{"expired", "failing", "suspended"} {
		m.Gateway.ExternalsDropped.WithLabelValues(reason) // exported at 0 from the start
	}
	m.submitsOK = m.Submits.WithLabelValues("ok")
	m.Gateway.DeliveredLocal = m.Deliveries.WithLabelValues("local")
	m.Gateway.DeliveredPeer = m.Deliveries.WithLabelValues("peer")
	m.Gateway.DeliveredExternal = m.Deliveries.WithLabelValues("external")
	return m
}

// recordSubmit counts one submit by its outcome.
func (m *Metrics) recordSubmit(err error) {
	if err == nil {
		m.submitsOK.Inc()
		return
	}
	m.Submits.WithLabelValues(wire.AsError(err).Code).Inc()
}

// watchExternals exports count, the external participants registered on
// this node, as a gauge read at each scrape.
func (m *Metrics) watchExternals(count func() int) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchyard_external_participants",
		Help: "External participants registered on this node (their directory entries are this node's).",
	}, func() float64 { return float64(count()) }))
}
