package scheduler_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/scheduler"
)

const gib = 1 << 30

// fakeRuns is a scheduler.Runs of function fields; nil fields do nothing.
type fakeRuns struct {
	fail   func(ctx context.Context, runID, reason, message string) error
	active func(ctx context.Context) ([]scheduler.ActiveRun, error)
}

func (f *fakeRuns) Fail(ctx context.Context, runID, reason, message string) error {
	if f.fail == nil {
		return nil
	}
	return f.fail(ctx, runID, reason, message)
}

func (f *fakeRuns) ActiveRuns(ctx context.Context) ([]scheduler.ActiveRun, error) {
	if f.active == nil {
		return nil, nil
	}
	return f.active(ctx)
}

// dispatcher is a scheduler.Dispatcher of one function field.
type dispatcher func(ctx context.Context, runID, nodeID string) error

func (d dispatcher) Dispatch(ctx context.Context, runID, nodeID string) error {
	return d(ctx, runID, nodeID)
}

// dispatch is one call of a recording dispatcher.
type dispatch struct{ run, node string }

// recorder returns a dispatcher that sends every call on a channel.
func recorder() (dispatcher, chan dispatch) {
	ch := make(chan dispatch, 1000)
	return func(_ context.Context, runID, nodeID string) error {
		ch <- dispatch{runID, nodeID}
		return nil
	}, ch
}

// next returns the next dispatch, failing after a generous wait: placements
// made by Release and NodeUp are dispatched in the background.
func next(t *testing.T, ch chan dispatch) dispatch {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("no dispatch")
		return dispatch{}
	}
}

func none(t *testing.T, ch chan dispatch) {
	t.Helper()
	select {
	case d := <-ch:
		t.Fatalf("unexpected dispatch %+v", d)
	default:
	}
}

func res(cpus float64, memGiB int64) runproto.Resources {
	return runproto.Resources{CPUs: cpus, MemoryBytes: memGiB * gib}
}

func req(id, ws string, cpus float64, memGiB int64) scheduler.Request {
	return scheduler.Request{RunID: id, WorkspaceID: ws, Driver: "wasm", TEE: "none", Resources: res(cpus, memGiB)}
}

func node(id, ws string, cpus float64, memGiB int64) scheduler.Node {
	return scheduler.Node{ID: id, WorkspaceID: ws, Capacity: res(cpus, memGiB), Drivers: []string{"wasm", "process"}, TEE: "none"}
}

var fixedNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func clock() time.Time { return fixedNow }

func TestPlacementRules(t *testing.T) {
	tee := func(n scheduler.Node, kind string) scheduler.Node { n.TEE = kind; return n }
	drivers := func(n scheduler.Node, d ...string) scheduler.Node { n.Drivers = d; return n }
	labels := func(n scheduler.Node, kv ...string) scheduler.Node {
		n.Labels = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			n.Labels[kv[i]] = kv[i+1]
		}
		return n
	}
	withReq := func(r scheduler.Request, f func(*scheduler.Request)) scheduler.Request { f(&r); return r }
	cases := []struct {
		name  string
		nodes []scheduler.Node
		req   scheduler.Request
		want  string // node ID, or "" for queued
	}{
		{"fits", []scheduler.Node{node("n1", "", 2, 4)}, req("r", "ws", 2, 4), "n1"},
		{"too little CPU", []scheduler.Node{node("n1", "", 1, 4)}, req("r", "ws", 2, 4), ""},
		{"too little memory", []scheduler.Node{node("n1", "", 4, 2)}, req("r", "ws", 2, 4), ""},
		{"fractional CPUs add up exactly", []scheduler.Node{node("n1", "", 0.3, 1)}, withReq(req("r", "ws", 0.1, 1), func(r *scheduler.Request) { r.Resources.MemoryBytes = 1 }), "n1"},
		{"driver missing", []scheduler.Node{drivers(node("n1", "", 4, 4), "process")}, req("r", "ws", 1, 1), ""},
		{"driver present", []scheduler.Node{drivers(node("n1", "", 4, 4), "process"), drivers(node("n2", "", 1, 1), "wasm")}, req("r", "ws", 1, 1), "n2"},
		{"TEE none takes a TEE node", []scheduler.Node{tee(node("n1", "", 4, 4), "sev-snp")}, req("r", "ws", 1, 1), "n1"},
		{"TEE empty means none", []scheduler.Node{tee(node("n1", "", 4, 4), "tdx")}, withReq(req("r", "ws", 1, 1), func(r *scheduler.Request) { r.TEE = "" }), "n1"},
		{"TEE any refuses none", []scheduler.Node{node("n1", "", 4, 4)}, withReq(req("r", "ws", 1, 1), func(r *scheduler.Request) { r.TEE = "any" }), ""},
		{"TEE any takes vtpm", []scheduler.Node{node("n1", "", 8, 8), tee(node("n2", "", 4, 4), "vtpm")}, withReq(req("r", "ws", 1, 1), func(r *scheduler.Request) { r.TEE = "any" }), "n2"},
		{"TEE exact", []scheduler.Node{tee(node("n1", "", 8, 8), "tdx"), tee(node("n2", "", 4, 4), "sev-snp")}, withReq(req("r", "ws", 1, 1), func(r *scheduler.Request) { r.TEE = "sev-snp" }), "n2"},
		{"TEE mismatch", []scheduler.Node{tee(node("n1", "", 8, 8), "tdx")}, withReq(req("r", "ws", 1, 1), func(r *scheduler.Request) { r.TEE = "sev-snp" }), ""},
		{"labels subset", []scheduler.Node{labels(node("n1", "", 8, 8), "zone", "eu"), labels(node("n2", "", 4, 4), "zone", "us", "gpu", "yes")}, withReq(req("r", "ws", 1, 1), func(r *scheduler.Request) { r.Labels = map[string]string{"zone": "us"} }), "n2"},
		{"label value differs", []scheduler.Node{labels(node("n1", "", 8, 8), "zone", "eu")}, withReq(req("r", "ws", 1, 1), func(r *scheduler.Request) { r.Labels = map[string]string{"zone": "us"} }), ""},
		{"empty label value must be present", []scheduler.Node{node("n1", "", 8, 8)}, withReq(req("r", "ws", 1, 1), func(r *scheduler.Request) { r.Labels = map[string]string{"gpu": ""} }), ""},
		{"own workspace node", []scheduler.Node{node("n1", "ws", 4, 4)}, req("r", "ws", 1, 1), "n1"},
		{"never another workspace's node", []scheduler.Node{node("n1", "other", 64, 64)}, req("r", "ws", 1, 1), ""},
		{"platform node serves all", []scheduler.Node{node("n1", "other", 64, 64), node("n2", "", 2, 2)}, req("r", "ws", 1, 1), "n2"},
		{"most free CPU wins", []scheduler.Node{node("n1", "", 4, 64), node("n2", "", 8, 4), node("n3", "ws", 6, 64)}, req("r", "ws", 1, 1), "n2"},
		{"most free CPU that has the memory", []scheduler.Node{node("n1", "", 4, 64), node("n2", "", 8, 4)}, req("r", "ws", 1, 8), "n1"},
		{"ties go to the lowest ID", []scheduler.Node{node("n2", "", 4, 4), node("n1", "", 4, 4)}, req("r", "ws", 1, 1), "n1"},
		{"disk too small", []scheduler.Node{{ID: "n1", Capacity: runproto.Resources{CPUs: 4, MemoryBytes: 4 * gib, DiskBytes: gib}, Drivers: []string{"wasm"}}}, withReq(req("r", "ws", 1, 1), func(r *scheduler.Request) { r.Resources.DiskBytes = 2 * gib }), ""},
		{"disk unknown is not checked", []scheduler.Node{node("n1", "", 4, 4)}, withReq(req("r", "ws", 1, 1), func(r *scheduler.Request) { r.Resources.DiskBytes = 2 * gib }), "n1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, ch := recorder()
			s := scheduler.New(&fakeRuns{}, d, clock)
			t.Cleanup(s.Close)
			for _, n := range c.nodes {
				s.NodeUp(n)
			}
			if err := s.Enqueue(context.Background(), c.req); err != nil {
				t.Fatal(err)
			}
			// Enqueue dispatches before it returns.
			var got string
			select {
			case d := <-ch:
				got = d.node
			default:
			}
			if got != c.want {
				t.Fatalf("placed on %q, want %q", got, c.want)
			}
			if st := s.Stats(); (st.Queued == 1) != (c.want == "") {
				t.Fatalf("queued = %d, want the run queued exactly when it was not placed", st.Queued)
			}
		})
	}
}

func TestEnqueueValidates(t *testing.T) {
	s := scheduler.New(&fakeRuns{}, nil, clock)
	t.Cleanup(s.Close)
	good := req("r", "ws", 1, 1)
	for name, f := range map[string]func(*scheduler.Request){
		"no run ID":       func(r *scheduler.Request) { r.RunID = "" },
		"unknown driver":  func(r *scheduler.Request) { r.Driver = "oci" },
		"unknown TEE":     func(r *scheduler.Request) { r.TEE = "sgx" },
		"no CPU":          func(r *scheduler.Request) { r.Resources.CPUs = 0 },
		"negative memory": func(r *scheduler.Request) { r.Resources.MemoryBytes = -1 },
		"negative disk":   func(r *scheduler.Request) { r.Resources.DiskBytes = -1 },
	} {
		r := good
		f(&r)
		if err := s.Enqueue(context.Background(), r); cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("%s: %v, want invalid", name, err)
		}
	}
	if err := s.Enqueue(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(context.Background(), good); cove.ErrorCode(err) != cove.Conflict {
		t.Fatalf("second enqueue: %v, want conflict", err)
	}
}

func TestReservationsFillANodeAndReleaseFreesIt(t *testing.T) {
	d, ch := recorder()
	s := scheduler.New(&fakeRuns{}, d, clock)
	t.Cleanup(s.Close)
	s.NodeUp(node("n1", "", 4, 8))
	ctx := context.Background()
	for i := range 4 {
		if err := s.Enqueue(ctx, req(fmt.Sprint("r", i), "ws", 1, 2)); err != nil {
			t.Fatal(err)
		}
		next(t, ch)
	}
	if err := s.Enqueue(ctx, req("r4", "ws", 1, 2)); err != nil {
		t.Fatal(err)
	}
	none(t, ch)
	st, _ := s.NodeStats("n1")
	if st.Runs != 4 || st.Reserved != res(4, 8) {
		t.Fatalf("node stats %+v, want 4 runs holding all of it", st)
	}
	s.Release(ctx, "r2")
	if d := next(t, ch); d != (dispatch{"r4", "n1"}) {
		t.Fatalf("after release: %+v", d)
	}
	s.Release(ctx, "unknown") // no effect
	s.Release(ctx, "r2")      // twice: no effect
	if st, _ := s.NodeStats("n1"); st.Runs != 4 {
		t.Fatalf("runs = %d after idempotent releases", st.Runs)
	}
}

func TestFIFOWithinWorkspaceRoundRobinAcross(t *testing.T) {
	d, ch := recorder()
	s := scheduler.New(&fakeRuns{}, d, clock)
	t.Cleanup(s.Close)
	ctx := context.Background()
	s.NodeUp(node("n1", "", 1, 1))
	if err := s.Enqueue(ctx, req("hold", "z", 1, 1)); err != nil {
		t.Fatal(err)
	}
	next(t, ch)
	for _, r := range []scheduler.Request{
		req("a1", "A", 1, 1), req("a2", "A", 1, 1), req("b1", "B", 1, 1), req("a3", "A", 1, 1),
		req("c1", "C", 1, 1), req("b2", "B", 1, 1),
	} {
		if err := s.Enqueue(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	none(t, ch)
	if st := s.Stats(); st.Queued != 6 || st.QueuedByWorkspace["A"] != 3 || st.QueuedByWorkspace["B"] != 2 {
		t.Fatalf("stats %+v", st)
	}
	var got []string
	running := "hold"
	for range 6 {
		s.Release(ctx, running)
		running = next(t, ch).run
		got = append(got, running)
	}
	if want := "a1 b1 c1 a2 b2 a3"; strings.Join(got, " ") != want {
		t.Fatalf("order %v, want %s", got, want)
	}
}

func TestHeadWaitsButImpossibleRunsDoNotBlock(t *testing.T) {
	d, ch := recorder()
	s := scheduler.New(&fakeRuns{}, d, clock)
	t.Cleanup(s.Close)
	ctx := context.Background()
	s.NodeUp(node("n1", "", 2, 2))
	must := func(r scheduler.Request) {
		t.Helper()
		if err := s.Enqueue(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	must(req("hold", "A", 1, 1))
	next(t, ch)
	// big waits for room; small, behind it in the same workspace, waits
	// too even though it would fit.
	must(req("big", "A", 2, 2))
	must(req("small", "A", 1, 1))
	none(t, ch)
	// A run no node could ever take does not hold back its workspace.
	huge := req("huge", "B", 64, 1)
	must(huge)
	must(req("b", "B", 1, 1))
	if got := next(t, ch); got.run != "b" {
		t.Fatalf("dispatched %+v, want b", got)
	}
	if got := s.Blockers(huge); len(got) != 1 || !strings.Contains(got[0], "no node is big enough for 64 CPUs and 1 GiB: the largest has 2 CPUs and 2 GiB") {
		t.Fatalf("blockers %q", got)
	}
}

func TestQueueDeadlineFailsNoCapacity(t *testing.T) {
	type failed struct{ id, reason, message string }
	fails := make(chan failed, 10)
	runs := &fakeRuns{fail: func(_ context.Context, id, reason, message string) error {
		fails <- failed{id, reason, message}
		return nil
	}}
	d, ch := recorder()
	s := scheduler.New(runs, d, clock)
	t.Cleanup(s.Close)
	ctx := context.Background()
	s.NodeUp(node("n1", "", 1, 1))
	busy := req("busy", "A", 1, 1)
	if err := s.Enqueue(ctx, busy); err != nil {
		t.Fatal(err)
	}
	next(t, ch)

	// One run waits for a busy node, one asks for a TEE nobody offers, one
	// is released before its deadline.
	waits := req("waits", "A", 1, 1)
	waits.QueueDeadline = fixedNow.Add(20 * time.Millisecond)
	tdx := req("tdx", "B", 1, 1)
	tdx.TEE, tdx.QueueDeadline = "tdx", fixedNow.Add(10*time.Millisecond)
	stopped := req("stopped", "C", 1, 1)
	stopped.QueueDeadline = fixedNow.Add(10 * time.Millisecond)
	for _, r := range []scheduler.Request{waits, tdx, stopped} {
		if err := s.Enqueue(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	s.Release(ctx, "stopped")

	got := map[string]failed{}
	for range 2 {
		select {
		case f := <-fails:
			got[f.id] = f
		case <-time.After(5 * time.Second):
			t.Fatalf("deadlines did not fire; got %v", got)
		}
	}
	for id, want := range map[string]string{"waits": "every suitable node stayed busy", "tdx": "no node offers TEE tdx"} {
		f := got[id]
		if f.reason != string(computation.NoCapacity) || !strings.Contains(f.message, want) {
			t.Errorf("%s: %+v, want failed no_capacity with %q", id, f, want)
		}
	}
	if st := s.Stats(); st.Queued != 0 {
		t.Fatalf("queued %d after the deadlines", st.Queued)
	}
	select {
	case f := <-fails:
		t.Fatalf("released run failed too: %+v", f)
	default:
	}
	none(t, ch)
}

func TestDispatchFailureFailsTheRunAndFreesTheRoom(t *testing.T) {
	fails := make(chan [2]string, 10)
	runs := &fakeRuns{fail: func(_ context.Context, id, reason, message string) error {
		if id == "bad" {
			fails <- [2]string{reason, message}
		}
		return nil
	}}
	ok := make(chan dispatch, 10)
	s := scheduler.New(runs, dispatcher(func(_ context.Context, runID, nodeID string) error {
		if runID == "bad" {
			return cove.Errorf(cove.Unavailable, "node did not answer")
		}
		ok <- dispatch{runID, nodeID}
		return nil
	}), clock)
	t.Cleanup(s.Close)
	ctx := context.Background()
	s.NodeUp(node("n1", "", 1, 1))
	if err := s.Enqueue(ctx, req("bad", "A", 1, 1)); err != nil {
		t.Fatal(err)
	}
	if f := <-fails; f[0] != string(computation.Internal) || !strings.Contains(f[1], "node did not answer") {
		t.Fatalf("failure %q", f)
	}
	if st, _ := s.NodeStats("n1"); st.Runs != 0 {
		t.Fatalf("reservation kept after a failed dispatch: %+v", st)
	}
	if err := s.Enqueue(ctx, req("good", "A", 1, 1)); err != nil {
		t.Fatal(err)
	}
	if d := next(t, ok); d.run != "good" {
		t.Fatalf("dispatched %+v", d)
	}
}

func TestNoDispatcherQueuesUntilSet(t *testing.T) {
	s := scheduler.New(&fakeRuns{}, nil, clock)
	t.Cleanup(s.Close)
	s.NodeUp(node("n1", "", 1, 1))
	if err := s.Enqueue(context.Background(), req("r", "A", 1, 1)); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Queued != 1 {
		t.Fatalf("queued %d without a dispatcher", st.Queued)
	}
	d, ch := recorder()
	s.SetDispatcher(d)
	if got := next(t, ch); got != (dispatch{"r", "n1"}) {
		t.Fatalf("dispatched %+v", got)
	}
}

func TestNodeDownKeepsReservationsAndNodeUpPlaces(t *testing.T) {
	d, ch := recorder()
	s := scheduler.New(&fakeRuns{}, d, clock)
	t.Cleanup(s.Close)
	ctx := context.Background()
	s.NodeUp(node("n1", "", 2, 2))
	if err := s.Enqueue(ctx, req("r1", "A", 1, 1)); err != nil {
		t.Fatal(err)
	}
	next(t, ch)
	s.NodeDown("n1") // draining: r1 goes on, nothing new lands
	if err := s.Enqueue(ctx, req("r2", "A", 1, 1)); err != nil {
		t.Fatal(err)
	}
	none(t, ch)
	if st, ok := s.NodeStats("n1"); !ok || st.Up || st.Runs != 1 {
		t.Fatalf("drained node %+v %v", st, ok)
	}
	s.NodeUp(node("n1", "", 2, 2)) // undrained: its reservation is still counted
	if got := next(t, ch); got != (dispatch{"r2", "n1"}) {
		t.Fatalf("dispatched %+v", got)
	}
	if err := s.Enqueue(ctx, req("r3", "A", 1, 1)); err != nil {
		t.Fatal(err)
	}
	none(t, ch)
	s.NodeDown("n1")
	s.Release(ctx, "r1")
	s.Release(ctx, "r2")
	if _, ok := s.NodeStats("n1"); ok {
		t.Fatal("a node that is down and holds nothing is still known")
	}
	if st := s.Stats(); st.Queued != 1 {
		t.Fatalf("queued %d", st.Queued)
	}
}

func TestBlockers(t *testing.T) {
	s := scheduler.New(&fakeRuns{}, nil, clock)
	t.Cleanup(s.Close)
	if got := s.Blockers(req("r", "A", 1, 1)); len(got) != 1 || !strings.Contains(got[0], "no approved node is online") {
		t.Fatalf("no nodes: %q", got)
	}
	s.NodeUp(scheduler.Node{ID: "n1", Capacity: res(2, 4), Drivers: []string{"process"}, TEE: "none", Labels: map[string]string{"zone": "eu"}})
	s.NodeUp(scheduler.Node{ID: "n2", Capacity: res(1, 8), Drivers: []string{"process"}, TEE: "vtpm"})
	s.NodeUp(scheduler.Node{ID: "n3", WorkspaceID: "other", Capacity: res(64, 64), Drivers: []string{"wasm"}, TEE: "sev-snp"})
	cases := []struct {
		name string
		f    func(*scheduler.Request)
		want []string
	}{
		{"fits", func(r *scheduler.Request) { r.Driver = "process" }, nil},
		{"busy is no blocker", func(r *scheduler.Request) { r.Driver = "process"; r.Resources = res(2, 4) }, nil},
		{"driver", func(r *scheduler.Request) {}, []string{"no approved node has the wasm driver"}},
		{"TEE kind", func(r *scheduler.Request) { r.Driver = "process"; r.TEE = "sev-snp" }, []string{"no node offers TEE sev-snp"}},
		{"TEE any is fine", func(r *scheduler.Request) { r.Driver = "process"; r.TEE = "any" }, nil},
		{"labels", func(r *scheduler.Request) {
			r.Driver, r.Labels = "process", map[string]string{"zone": "us", "gpu": "a100"}
		}, []string{"no node has the labels gpu=a100, zone=us"}},
		{"size", func(r *scheduler.Request) { r.Driver = "process"; r.Resources = res(4, 8) },
			[]string{"no node is big enough for 4 CPUs and 8 GiB: the largest has 2 CPUs and 4 GiB"}},
		{"size after TEE", func(r *scheduler.Request) { r.Driver = "process"; r.TEE = "any"; r.Resources = res(2, 1) },
			[]string{"no node is big enough for 2 CPUs and 1 GiB: the largest has 1 CPU and 8 GiB"}},
		{"several", func(r *scheduler.Request) { r.TEE = "tdx"; r.Resources = res(3, 1) }, []string{
			"no approved node has the wasm driver", "no node offers TEE tdx",
			"no node is big enough for 3 CPUs and 1 GiB: the largest has 2 CPUs and 4 GiB",
		}},
		{"invalid", func(r *scheduler.Request) { r.Driver = "oci" }, []string{"the driver oci is not wasm or process"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := req("r", "A", 1, 1)
			c.f(&r)
			got := s.Blockers(r)
			if strings.Join(got, "|") != strings.Join(c.want, "|") {
				t.Fatalf("blockers\n got %q\nwant %q", got, c.want)
			}
		})
	}
}

func TestRecover(t *testing.T) {
	at := func(min int) time.Time { return fixedNow.Add(-time.Duration(min) * time.Minute) }
	sized := func(cpus float64) *scheduler.Request { r := req("", "", cpus, 1); return &r }
	active := func(known bool) []scheduler.ActiveRun {
		runs := []scheduler.ActiveRun{
			{ID: "late", WorkspaceID: "A", Queued: true, CreatedAt: at(1), Request: sized(1)},
			{ID: "running", WorkspaceID: "A", NodeID: "n1", CreatedAt: at(10), Request: sized(2)},
			{ID: "early", WorkspaceID: "A", Queued: true, CreatedAt: at(5), Request: sized(2)},
		}
		if !known {
			for i := range runs {
				runs[i].Request = nil
			}
		}
		return runs
	}

	t.Run("with requests", func(t *testing.T) {
		runs := &fakeRuns{active: func(context.Context) ([]scheduler.ActiveRun, error) { return active(true), nil }}
		d, ch := recorder()
		s := scheduler.New(runs, d, clock)
		t.Cleanup(s.Close)
		if err := s.Recover(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := s.Recover(context.Background()); err != nil { // idempotent
			t.Fatal(err)
		}
		if st := s.Stats(); st.Queued != 2 || len(st.Nodes) != 1 || st.Nodes[0].Runs != 1 || st.Nodes[0].Up {
			t.Fatalf("stats after recover %+v", st)
		}
		none(t, ch)
		// n1 has 4 CPUs; "running" holds 2, so "early" (created first, 2
		// CPUs) goes, and "late" waits behind it.
		s.NodeUp(node("n1", "", 4, 4))
		if got := next(t, ch); got != (dispatch{"early", "n1"}) {
			t.Fatalf("dispatched %+v", got)
		}
		none(t, ch)
		s.Release(context.Background(), "running")
		if got := next(t, ch); got != (dispatch{"late", "n1"}) {
			t.Fatalf("dispatched %+v", got)
		}
	})

	t.Run("without requests", func(t *testing.T) {
		failed := make(chan string, 10)
		runs := &fakeRuns{
			active: func(context.Context) ([]scheduler.ActiveRun, error) { return active(false), nil },
			fail: func(_ context.Context, id, reason, _ string) error {
				if reason == string(computation.Internal) {
					failed <- id
				}
				return nil
			},
		}
		d, ch := recorder()
		s := scheduler.New(runs, d, clock)
		t.Cleanup(s.Close)
		if err := s.Recover(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{<-failed: true, <-failed: true}
		if !got["early"] || !got["late"] {
			t.Fatalf("failed %v, want the queued runs", got)
		}
		// The running run's size is unknown: it holds all of n1.
		s.NodeUp(node("n1", "", 4, 4))
		if err := s.Enqueue(context.Background(), req("new", "A", 1, 1)); err != nil {
			t.Fatal(err)
		}
		none(t, ch)
		if st, _ := s.NodeStats("n1"); st.Reserved != res(4, 4) {
			t.Fatalf("reserved %+v, want the whole node", st.Reserved)
		}
		s.Release(context.Background(), "running")
		if got := next(t, ch); got != (dispatch{"new", "n1"}) {
			t.Fatalf("dispatched %+v", got)
		}
	})
}

// TestNeverOverCommits runs placements, releases, failed dispatches and
// node churn from many goroutines at once and checks, at every dispatch and
// in snapshots, that no node ever holds more than its capacity. Run it
// with -race.
func TestNeverOverCommits(t *testing.T) {
	type placed struct {
		node string
		need runproto.Resources
	}
	var (
		mu         sync.Mutex
		ledger     = map[string]placed{} // runs dispatched and not yet released
		used       = map[string]runproto.Resources{}
		releasing  = map[string]bool{}
		sizes      = map[string]runproto.Resources{}
		capacity   = map[string]runproto.Resources{}
		dispatched int
	)
	var nodes []scheduler.Node
	for i := range 12 {
		n := node(fmt.Sprint("n", i), "", float64(1+i%4), int64(2+i%3))
		if i%3 == 0 {
			n.WorkspaceID = fmt.Sprint("w", i%2)
		}
		nodes = append(nodes, n)
		capacity[n.ID] = n.Capacity
	}
	s := scheduler.New(&fakeRuns{}, dispatcher(func(_ context.Context, runID, nodeID string) error {
		mu.Lock()
		defer mu.Unlock()
		if releasing[runID] {
			return nil
		}
		if rand.IntN(20) == 0 {
			return cove.Errorf(cove.Unavailable, "flaky node")
		}
		need := sizes[runID]
		if _, dup := ledger[runID]; dup {
			t.Errorf("run %s dispatched twice", runID)
		}
		ledger[runID] = placed{nodeID, need}
		dispatched++
		u := used[nodeID]
		u.CPUs += need.CPUs
		u.MemoryBytes += need.MemoryBytes
		used[nodeID] = u
		if c := capacity[nodeID]; u.CPUs > c.CPUs+1e-9 || u.MemoryBytes > c.MemoryBytes {
			t.Errorf("node %s over-committed: %+v of %+v", nodeID, u, c)
		}
		return nil
	}), clock)
	t.Cleanup(s.Close)
	for _, n := range nodes {
		s.NodeUp(n)
	}
	ctx := context.Background()
	// release drops a run from the ledger before the scheduler frees it,
	// so the ledger never holds more than the scheduler does.
	release := func(id string) {
		mu.Lock()
		releasing[id] = true
		if p, ok := ledger[id]; ok {
			u := used[p.node]
			u.CPUs -= p.need.CPUs
			u.MemoryBytes -= p.need.MemoryBytes
			used[p.node] = u
			delete(ledger, id)
		}
		mu.Unlock()
		s.Release(ctx, id)
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []string
			for i := range 300 {
				id := fmt.Sprintf("r%d_%d", g, i)
				r := req(id, fmt.Sprint("w", rand.IntN(3)), []float64{0.5, 1, 1.5, 2}[rand.IntN(4)], int64(1+rand.IntN(2)))
				mu.Lock()
				sizes[id] = r.Resources
				mu.Unlock()
				if err := s.Enqueue(ctx, r); err != nil {
					t.Error(err)
					return
				}
				mine = append(mine, id)
				for len(mine) > 4 || (len(mine) > 0 && rand.IntN(3) == 0) {
					k := rand.IntN(len(mine))
					release(mine[k])
					mine = append(mine[:k], mine[k+1:]...)
				}
				if i%50 == 0 { // a node is drained and comes back
					n := nodes[rand.IntN(len(nodes))]
					s.NodeDown(n.ID)
					s.NodeUp(n)
				}
				if i%25 == 0 {
					for _, n := range s.Stats().Nodes {
						if n.Reserved.CPUs > n.Capacity.CPUs+1e-9 || n.Reserved.MemoryBytes > n.Capacity.MemoryBytes {
							t.Errorf("stats show node %s over-committed: %+v", n.ID, n)
						}
					}
				}
			}
			for _, id := range mine {
				release(id)
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	if dispatched < 100 {
		t.Errorf("only %d of 4800 runs were dispatched; the test exercised little", dispatched)
	}
	mu.Unlock()
	st := s.Stats()
	if st.Queued != 0 {
		t.Errorf("queued %d after every run was released", st.Queued)
	}
	for _, n := range st.Nodes {
		if n.Runs != 0 || n.Reserved != (runproto.Resources{}) {
			t.Errorf("node %s still holds %+v", n.ID, n)
		}
	}
}
