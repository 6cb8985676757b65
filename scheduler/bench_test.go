package scheduler_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/covecompute/cove/scheduler"
)

// BenchmarkPlace measures placements on a fleet of 10,000 nodes: platform
// and workspace nodes of several sizes, two driver sets, two TEE kinds and
// four zones, half full. Each iteration places one run (a node is picked
// and reserved and the run dispatched to a no-op dispatcher) and releases
// an older one.
func BenchmarkPlace(b *testing.B) {
	const nodes, workspaces = 10_000, 50
	s := scheduler.New(&fakeRuns{}, dispatcher(func(context.Context, string, string) error { return nil }), clock)
	b.Cleanup(s.Close)
	for i := range nodes {
		n := node(fmt.Sprintf("node_%05d", i), "", float64(int(4)<<(i%3)), int64(8)<<(i%3))
		if i%10 == 0 {
			n.WorkspaceID = fmt.Sprint("ws_", i%workspaces)
		}
		if i%2 == 0 {
			n.Drivers = []string{"wasm"}
		}
		if i%7 == 0 {
			n.TEE = "sev-snp"
		}
		n.Labels = map[string]string{"zone": fmt.Sprint("z", i%4)}
		s.NodeUp(n)
	}
	request := func(i int) scheduler.Request {
		r := req(fmt.Sprint("run_", i), fmt.Sprint("ws_", i%workspaces), float64(1+i%2), int64(1+i%4))
		switch i % 4 {
		case 1:
			r.Labels = map[string]string{"zone": fmt.Sprint("z", i%3)}
		case 2:
			r.TEE = "any"
		case 3:
			r.Driver = "process"
		}
		return r
	}
	ctx := context.Background()
	// Fill about half the fleet's CPU.
	const prefill = 30_000
	for i := range prefill {
		if err := s.Enqueue(ctx, request(i)); err != nil {
			b.Fatal(err)
		}
	}
	if st := s.Stats(); st.Queued != 0 {
		b.Fatalf("%d runs queued after the prefill", st.Queued)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := s.Enqueue(ctx, request(prefill+i)); err != nil {
			b.Fatal(err)
		}
		s.Release(ctx, fmt.Sprint("run_", i))
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
	if st := s.Stats(); st.Queued != 0 {
		b.Fatalf("%d runs queued: the fleet filled up", st.Queued)
	}
}
