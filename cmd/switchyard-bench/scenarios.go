package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"
)

// measure wraps a scenario's load phase with /proc samples of the server
// (summed over its pids) and of the load generator itself.
type measure struct {
	pids        []string
	server0     procSample
	bench0      procSample
	start       time.Time
	peakSampler chan struct{}
	peak        int64
	wg          sync.WaitGroup
}

func startMeasure(pids []string) *measure {
	m := &measure{pids: pids, start: time.Now(), peakSampler: make(chan struct{})}
	m.server0 = m.server()
	m.bench0, _ = sampleProc(fmt.Sprint(os.Getpid()))
	m.wg.Add(1)
	go func() { // peak RSS of the whole run, sampled (VmHWM covers the process's life)
		defer m.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-m.peakSampler:
				return
			case <-t.C:
				m.peak = max(m.peak, m.server().rss)
			}
		}
	}()
	return m
}

func (m *measure) server() procSample {
	var total procSample
	for _, pid := range m.pids {
		s, err := sampleProc(pid)
		if err != nil {
			continue
		}
		total.cpu += s.cpu
		total.sys += s.sys
		total.rss += s.rss
		total.hwm += s.hwm
	}
	return total
}

func (m *measure) finish(r *result) {
	close(m.peakSampler)
	m.wg.Wait()
	r.Seconds = time.Since(m.start).Seconds()
	end := m.server()
	r.ServerCPUSec = (end.cpu - m.server0.cpu).Seconds()
	r.ServerSysCPUSec = (end.sys - m.server0.sys).Seconds()
	r.ServerRSSMiB = float64(end.rss) / (1 << 20)
	r.ServerPeakRSSMiB = float64(max(m.peak, end.rss)) / (1 << 20)
	b, _ := sampleProc(fmt.Sprint(os.Getpid()))
	r.BenchCPUSec = (b.cpu - m.bench0.cpu).Seconds()
}

// attachAll attaches n subscribers, spread over source addresses.
func attachAll(ctx context.Context, o options, n int, sessionsOf func(i int) []string) ([]*subscriber, error) {
	clients := dialers(o.sources)
	subs := make([]*subscriber, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s, err := attachSubscriber(ctx, clients[i%len(clients)], o.subURL, fmt.Sprintf("bench-%d", i), sessionsOf(i), o.batch, o.apiKey)
			if err != nil {
				errs <- fmt.Errorf("attach subscriber %d: %w", i, err)
				return
			}
			subs[i] = s
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		closeAll(subs)
		return nil, err
	}
	return subs, nil
}

func closeAll(subs []*subscriber) {
	for _, s := range subs {
		if s != nil {
			_ = s.conn.Close()
		}
	}
}

// collect waits for the deliveries to arrive (or drainWait), closes the
// subscribers, and fills the delivery figures.
func collect(subs []*subscriber, expect func(i int) int64, o options, r *result, m *measure, readers *sync.WaitGroup) {
	deadline := time.Now().Add(o.drainWait)
	for time.Now().Before(deadline) {
		done := true
		for i, s := range subs {
			if s.got.Load() < expect(i) {
				done = false
				break
			}
		}
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling the counters, not asserting
	}
	m.finish(r)
	closeAll(subs)
	readers.Wait()
	var h histogram
	for i, s := range subs {
		got := s.got.Load()
		r.Deliveries += got
		r.Duplicates += s.dups
		r.Lost += max(expect(i)-got, 0)
		h.merge(&s.hist)
	}
	r.Subscribers = len(subs)
	r.Batch = o.batch
	r.DeliveriesPerSec = float64(r.Deliveries) / r.Seconds
	if r.ServerCPUSec > 0 {
		r.PerServerCPUSec = float64(r.Deliveries) / r.ServerCPUSec
	}
	r.P50ms, r.P90ms, r.P99ms = ms(h.quantile(.5)), ms(h.quantile(.9)), ms(h.quantile(.99))
	r.P999ms, r.MaxMs = ms(h.quantile(.999)), ms(h.max)
}

func startReaders(subs []*subscriber) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Add(1)
		go func() { defer wg.Done(); s.read() }()
	}
	return &wg
}

// runFanout: one session, o.subscribers subscribers, one publisher. With
// --sub-url another node, it is the cross-node scenario.
func runFanout(ctx context.Context, o options) (result, error) {
	r := result{Scenario: o.scenario}
	subs, err := attachAll(ctx, o, o.subscribers, func(int) []string { return []string{"fanout"} })
	if err != nil {
		return r, err
	}
	readers := startReaders(subs)
	p := newPublisher(o, 1)
	defer p.close()
	m := startMeasure(o.pids)
	p.run(o.duration, o.rate, o.concurrency, func(int64) (int, string) { return 0, "fanout" })
	r.EventsSent, r.SubmitErrors = p.sent.Load(), p.errors.Load()
	collect(subs, func(int) int64 { return p.perSess[0].Load() }, o, &r, m, readers)
	return r, nil
}

// runPairs: o.pairs sessions of two subscribers; each submit goes to a
// random session (two deliveries).
func runPairs(ctx context.Context, o options) (result, error) {
	r := result{Scenario: "pairs"}
	names := make([]string, o.pairs)
	for i := range names {
		names[i] = fmt.Sprint("pair-", i)
	}
	subs, err := attachAll(ctx, o, 2*o.pairs, func(i int) []string { return []string{names[i/2]} })
	if err != nil {
		return r, err
	}
	readers := startReaders(subs)
	p := newPublisher(o, o.pairs)
	defer p.close()
	m := startMeasure(o.pids)
	p.run(o.duration, o.rate, o.concurrency, func(int64) (int, string) {
		s := rand.IntN(o.pairs)
		return s, names[s]
	})
	r.EventsSent, r.SubmitErrors = p.sent.Load(), p.errors.Load()
	collect(subs, func(i int) int64 { return p.perSess[i/2].Load() }, o, &r, m, readers)
	return r, nil
}

// runIdle: o.connections attached participants, one session each, doing
// nothing; reports the server's RSS per connection.
func runIdle(ctx context.Context, o options) (result, error) {
	r := result{Scenario: "idle"}
	m := startMeasure(o.pids)
	before := m.server0.rss
	subs, err := attachAll(ctx, o, o.connections, func(i int) []string { return []string{fmt.Sprint("idle-", i)} })
	if err != nil {
		return r, err
	}
	readers := startReaders(subs)
	time.Sleep(2 * time.Second) // let the server settle (GC) before reading its RSS
	after := m.server().rss
	r.RSSPerConnKiB = float64(after-before) / float64(o.connections) / 1024
	collect(subs, func(int) int64 { return 0 }, options{drainWait: 0, batch: o.batch}, &r, m, readers)
	r.Subscribers = o.connections
	return r, nil
}
