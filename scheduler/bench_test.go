package scheduler_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/covecompute/cove/bench"
)

// BenchmarkPlace measures placements on the fleet of 10,000 nodes that
// `cove bench --scenario placement` measures (bench.Fleet): platform and
// workspace nodes of several sizes, two driver sets, two TEE kinds and four
// zones, half full. Each iteration places one run (a node is picked and
// reserved and the run dispatched to a no-op dispatcher) and releases an
// older one.
func BenchmarkPlace(b *testing.B) {
	ctx := context.Background()
	s, request, placed, err := bench.Fleet(ctx, 10_000)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := s.Enqueue(ctx, request(placed+i)); err != nil {
			b.Fatal(err)
		}
		s.Release(ctx, fmt.Sprint("run_", i))
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
	if st := s.Stats(); st.Queued != 0 {
		b.Fatalf("%d runs queued: the fleet filled up", st.Queued)
	}
}
