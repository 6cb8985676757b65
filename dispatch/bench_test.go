package dispatch_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/runproto"
)

// BenchmarkLogsFollow reads b.N lines, stored beforehand in batches of
// 1,000, with a follower that ends at the run's end. It reports how fast
// the lines were stored too.
func BenchmarkLogsFollow(b *testing.B) {
	h := newHarness(b)
	f := h.newRun(computation.Running, "", 10, "none")
	a := h.agent(f.run.ID)
	total := int64(b.N)
	start := time.Now()
	a.logLines(1, total, 1000)
	storeRate := float64(total) / time.Since(start).Seconds()
	a.event(runproto.Event{State: string(computation.Failed), Reason: string(computation.OOM), LogLines: total})
	h.runs.waitState(b, f.run.ID, computation.Failed)

	b.ResetTimer()
	start = time.Now()
	var n int64
	if err := h.d.ReadLogs(context.Background(), f.run.ID, 0, true, func(runproto.LogLine) error {
		n++
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	if n != total {
		b.Fatalf("read %d lines of %d", n, total)
	}
	b.ReportMetric(float64(n)/took.Seconds(), "lines/s")
	b.ReportMetric(storeRate, "stored-lines/s")
}

// BenchmarkChunkServe fetches a 64 MiB input chunk by chunk, with one and
// with four requests in flight.
func BenchmarkChunkServe(b *testing.B) {
	const size = 64 << 20
	for _, window := range []int{1, 4} {
		b.Run(fmt.Sprintf("inflight=%d", window), func(b *testing.B) {
			h := newHarness(b)
			f := h.newRun(computation.Provisioning, "", size, "none")
			a := h.agent(f.run.ID)
			rep, err := a.manifest()
			if err != nil {
				b.Fatal(err)
			}
			inputs, err := a.attest(a.evidence(rep, "none"))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(size)
			for b.Loop() {
				if _, err := a.fetch(inputs.Datasets[0], window); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
