package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/scheduler"
)

// placement measures the scheduler alone on a fleet of 10,000 nodes:
// platform and workspace nodes of several sizes, two driver sets, two TEE
// kinds and four zones, half full. Each decision places one run (a node is
// picked and reserved and the run dispatched to a dispatcher that does
// nothing) and releases an older one, so the fleet stays half full.
func placement(ctx context.Context, r *runner, _ map[string]bool) ([]Result, error) {
	const sc = "placement"
	nodes := 10_000
	s, request, prefill, err := Fleet(ctx, nodes)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	n := r.size(500_000, 50_000)
	r.progress("placement: %d decisions on %d nodes", n, nodes)
	cpu := processCPU()
	start := time.Now()
	for i := range n {
		if err := s.Enqueue(ctx, request(prefill+i)); err != nil {
			return nil, err
		}
		s.Release(ctx, fmt.Sprint("run_", i))
	}
	took := time.Since(start)
	used := processCPU() - cpu
	if st := s.Stats(); st.Queued != 0 {
		return nil, fmt.Errorf("%d runs queued: the fleet filled up", st.Queued)
	}
	return []Result{
		atLeast(sc, "decisions/s, 10,000 nodes (wall)", float64(n)/took.Seconds(), "decisions/s", 20_000),
		figure(sc, "cpu per decision", float64(used.Nanoseconds())/float64(n)/1000, "µs"),
	}, nil
}

// Fleet returns a scheduler holding nodes nodes and about half full, the
// requests a benchmark places on it by number, and how many it placed
// already. Close the scheduler.
func Fleet(ctx context.Context, nodes int) (s *scheduler.Scheduler, request func(int) scheduler.Request, placed int, err error) {
	const workspaces = 50
	s = scheduler.New(noRuns{}, noDispatch{}, nil)
	res := func(cpus float64, gib int64) runproto.Resources {
		return runproto.Resources{CPUs: cpus, MemoryBytes: gib << 30, DiskBytes: gib << 30}
	}
	for i := range nodes {
		n := scheduler.Node{ID: fmt.Sprintf("node_%05d", i), Capacity: res(float64(int(4)<<(i%3)), int64(8)<<(i%3)),
			Drivers: []string{"wasm", "process"}, TEE: "none", Labels: map[string]string{"zone": fmt.Sprint("z", i%4)}}
		if i%10 == 0 {
			n.WorkspaceID = fmt.Sprint("ws_", i%workspaces)
		}
		if i%2 == 0 {
			n.Drivers = []string{"wasm"}
		}
		if i%7 == 0 {
			n.TEE = "sev-snp"
		}
		s.NodeUp(n)
	}
	request = func(i int) scheduler.Request {
		r := scheduler.Request{RunID: fmt.Sprint("run_", i), WorkspaceID: fmt.Sprint("ws_", i%workspaces), Driver: "wasm", TEE: "none",
			Resources: res(float64(1+i%2), int64(1+i%4))}
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
	// Fill about half the fleet's CPU.
	placed = nodes * 3
	for i := range placed {
		if err := s.Enqueue(ctx, request(i)); err != nil {
			s.Close()
			return nil, nil, 0, err
		}
	}
	if st := s.Stats(); st.Queued != 0 {
		s.Close()
		return nil, nil, 0, fmt.Errorf("%d runs queued after the prefill", st.Queued)
	}
	return s, request, placed, nil
}

var (
	_ scheduler.Runs       = noRuns{}
	_ scheduler.Dispatcher = noDispatch{}
)

// noRuns is a scheduler.Runs with no runs.
type noRuns struct{}

func (noRuns) Fail(context.Context, string, string, string) error { return nil }
func (noRuns) ActiveRuns(context.Context) ([]scheduler.ActiveRun, error) {
	return nil, nil
}

// noDispatch is a scheduler.Dispatcher that accepts every run.
type noDispatch struct{}

func (noDispatch) Dispatch(context.Context, string, string) error { return nil }
