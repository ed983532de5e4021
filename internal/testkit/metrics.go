package testkit

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// MetricValue reads a counter's or a gauge's current value.
func MetricValue(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	require.NoError(t, m.Write(&out))
	if out.Counter != nil {
		return out.Counter.GetValue()
	}
	require.NotNil(t, out.Gauge, "%s is neither a counter nor a gauge", m.Desc())
	return out.Gauge.GetValue()
}
