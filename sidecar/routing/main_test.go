package routing

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newTestMetrics are the core's collectors, unregistered: what a test
// reads of them it reads directly.
func newTestMetrics() Metrics {
	counter := func(name string) prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: name}) }
	return Metrics{
		Handoffs:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "handoffs"}, []string{"result"}),
		ExternalsDropped:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "externals_dropped"}, []string{"reason"}),
		DeliveredLocal:    counter("delivered_local"),
		DeliveredPeer:     counter("delivered_peer"),
		DeliveredExternal: counter("delivered_external"),
	}
}
