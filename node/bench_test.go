package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/covecompute/cove/app/apptest"
)

// BenchmarkHeartbeat measures the registry's share of a node heartbeat
// (Service.Heartbeat: the live view, the lost timer, the scheduler, and
// the batched last_seen_at writes in the background) over 1,000 enrolled
// nodes heartbeating in turn. `cove bench --scenario heartbeat` measures
// the whole server.
func BenchmarkHeartbeat(b *testing.B) {
	const nodes = 1_000
	v := newEnv(b, apptest.Engines()[0])
	svc, _ := v.registry(b, newFakeRuns(), 15*time.Second, nil)
	ids := make([]string, nodes)
	for i := range ids {
		ids[i] = v.enroll(b, svc, v.admin, "", true, fmt.Sprint("n", i))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := svc.Heartbeat(v.ctx, heartbeat(ids[i%nodes])); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
