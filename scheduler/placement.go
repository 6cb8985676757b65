package scheduler

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/runproto"
)

// Drivers and TEE kinds a request may name.
const (
	DriverWasm    = "wasm"
	DriverProcess = "process"

	TEENone   = "none" // no requirement: any node
	TEEAny    = "any"  // any real TEE
	TEEVTPM   = "vtpm"
	TEESEVSNP = "sev-snp"
	TEETDX    = "tdx"
)

// Node is a compute node as the scheduler sees it: what it offers. Only
// nodes that are approved, not draining and alive are given to the
// scheduler (NodeUp); the node service takes them away (NodeDown).
type Node struct {
	ID string
	// WorkspaceID is the workspace the node belongs to; empty for a
	// platform node, which serves every workspace.
	WorkspaceID string
	Capacity    runproto.Resources
	Drivers     []string
	Labels      map[string]string
	TEE         string // "none", "vtpm", "sev-snp", "tdx"
}

// Runs is the run store as the scheduler uses it. Package computation
// imports this package (for Request), so the scheduler cannot name
// computation's types; the app adapts the computation service to it.
type Runs interface {
	// Fail moves a run to failed with reason (ReasonNoCapacity or
	// ReasonInternal) and a message for its participants. It returns
	// conflict when the run has already ended and not_found when it does
	// not exist.
	Fail(ctx context.Context, runID, reason, message string) error
	// ActiveRuns returns every run that has not ended.
	ActiveRuns(ctx context.Context) ([]ActiveRun, error)
}

// Failure reasons the scheduler gives; they are computation.Reason values.
const (
	ReasonNoCapacity = "no_capacity"
	ReasonInternal   = "internal"
)

// ActiveRun is a run that has not ended, as Recover needs it.
type ActiveRun struct {
	ID          string
	WorkspaceID string
	// Queued is true for a run waiting for a node; any other active run
	// holds capacity on NodeID.
	Queued    bool
	NodeID    string
	CreatedAt time.Time
	// Request is what the run was enqueued with (its RunID and WorkspaceID
	// need not be set). Nil when it cannot be rebuilt: Recover then fails a
	// queued run (internal) and counts a run holding a node as holding the
	// whole node, which can waste capacity but never over-commits it.
	Request *Request
}

// Dispatcher hands placed runs to their nodes.
type Dispatcher interface {
	// Dispatch moves the run to scheduled on nodeID and commands the node
	// to start it. On an error the scheduler frees the reservation and
	// fails the run (internal).
	Dispatch(ctx context.Context, runID, nodeID string) error
}

// Scheduler places runs on nodes. It is safe for concurrent use.
//
// Placement: a node is a candidate for a request when it is a platform
// node or belongs to the request's workspace, has the driver, satisfies
// the TEE ("none" takes any node, "any" any node with a TEE, else that
// kind), carries every requested label, and has at least the requested
// CPU and memory free (and disk, when it advertises a disk size). Among
// candidates the one with the most free CPU wins (then the most free
// memory, then the lowest ID): spreading runs keeps headroom on every node
// and makes a busy node the last choice. Reservations never exceed a
// node's capacity.
//
// Queue: requests that fit nowhere wait, first in first out within a
// workspace and round robin across workspaces: each time a run is placed,
// the next turn goes to the next workspace with waiting runs. A waiting
// run holds back the later runs of its workspace, so a stream of small
// runs cannot starve a big one; a run that no node could take even when
// idle (see Blockers) does not hold anyone back. A run still waiting at
// its QueueDeadline fails with no_capacity.
//
// Placement is tried when a request arrives (Enqueue), when capacity frees
// up (Release) and when a node joins or comes back (NodeUp); deadlines are
// timers. Nothing polls.
type Scheduler struct {
	runs Runs
	now  func() time.Time

	mu      sync.Mutex
	disp    Dispatcher
	log     *slog.Logger
	closed  bool
	nodes   map[string]*nodeState
	classes map[string]*class   // by classKey
	scopes  map[string][]*class // by workspace ID; "" holds the platform's
	held    map[string]*hold    // reservations by run ID
	waiting map[string]*entry   // queued requests by run ID
	queues  map[string][]*entry // queued requests by workspace, oldest first
	ring    []string            // workspaces with queued requests, in turn order
	turn    int                 // index in ring of the workspace served next
}

// hold is a reservation.
type hold struct {
	node  string
	need  amount
	whole bool // size unknown (recovered without its request): it holds the whole node
}

// entry is a queued request.
type entry struct {
	req   Request
	need  amount
	timer *time.Timer
}

// placement is a reservation made under the lock, to dispatch outside it.
type placement struct {
	runID, nodeID string
	disp          Dispatcher
}

// New returns a scheduler that records outcomes in runs and dispatches
// placed runs with disp. disp may be nil until SetDispatcher: runs wait in
// the queue until there is one. now nil means time.Now.
func New(runs Runs, disp Dispatcher, now func() time.Time) *Scheduler {
	if now == nil {
		now = time.Now
	}
	return &Scheduler{
		runs: runs, disp: disp, now: now, log: slog.New(slog.DiscardHandler),
		nodes: map[string]*nodeState{}, classes: map[string]*class{}, scopes: map[string][]*class{},
		held: map[string]*hold{}, waiting: map[string]*entry{}, queues: map[string][]*entry{},
	}
}

// SetLogger sets where failures that no caller sees are logged: a run that
// could not be failed after its queue deadline or a failed dispatch.
func (s *Scheduler) SetLogger(log *slog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = log
}

// SetDispatcher sets the dispatcher, for wiring where the dispatcher is
// built after the scheduler, and places the runs that waited for one.
func (s *Scheduler) SetDispatcher(d Dispatcher) {
	s.mu.Lock()
	s.disp = d
	ps := s.place()
	s.mu.Unlock()
	s.dispatchAsync(ps)
}

// Close stops the queue deadline timers and places nothing more. Queued
// runs stay queued in the store; Recover picks them up at the next start.
func (s *Scheduler) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, e := range s.waiting {
		if e.timer != nil {
			e.timer.Stop()
		}
	}
}

// validate checks a request and returns what it needs.
func (r *Request) validate() (amount, error) {
	bad := func(field, msg string) (amount, error) {
		return amount{}, cove.Errorf(cove.Invalid, "the run cannot be scheduled: %s", msg).WithDetails(cove.Detail{Field: field, Message: msg})
	}
	switch {
	case r.RunID == "":
		return bad("run_id", "the run ID is empty")
	case r.Driver != DriverWasm && r.Driver != DriverProcess:
		return bad("driver", "the driver "+r.Driver+" is not wasm or process")
	case !validTEE(r.TEE, true):
		return bad("tee", "the TEE "+r.TEE+" is not none, any, vtpm, sev-snp or tdx")
	case math.IsNaN(r.Resources.CPUs) || r.Resources.CPUs < 0.001 || r.Resources.CPUs > 1e6:
		return bad("cpus", "the CPUs must be from 0.001 to 1000000")
	case r.Resources.MemoryBytes <= 0:
		return bad("memory_bytes", "the memory must be positive")
	case r.Resources.DiskBytes < 0:
		return bad("disk_bytes", "the disk must not be negative")
	}
	return amountOf(r.Resources), nil
}

// validTEE reports whether t is a TEE kind; "any" only for requests.
func validTEE(t string, request bool) bool {
	switch t {
	case "", TEENone, TEEVTPM, TEESEVSNP, TEETDX:
		return true
	case TEEAny:
		return request
	}
	return false
}

// Enqueue places r now if a node has room, dispatching it before it
// returns, and queues it otherwise. It returns invalid for a malformed
// request and conflict when the run is already queued or placed. A failed
// dispatch is not an error of Enqueue: the run is failed (internal) and
// its reservation freed.
func (s *Scheduler) Enqueue(ctx context.Context, r Request) error {
	need, err := r.validate()
	if err != nil {
		return err
	}
	r.Labels = cloneMap(r.Labels)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return cove.Errorf(cove.Unavailable, "the scheduler is shutting down; try again")
	}
	if s.held[r.RunID] != nil || s.waiting[r.RunID] != nil {
		s.mu.Unlock()
		return cove.Errorf(cove.Conflict, "run %s is already scheduled", r.RunID)
	}
	s.enqueue(r, need)
	ps := s.place()
	s.mu.Unlock()
	s.dispatch(context.WithoutCancel(ctx), ps)
	return nil
}

// enqueue appends r to its workspace's queue and arms its deadline.
func (s *Scheduler) enqueue(r Request, need amount) {
	e := &entry{req: r, need: need}
	s.waiting[r.RunID] = e
	if len(s.queues[r.WorkspaceID]) == 0 {
		s.ring = append(s.ring, r.WorkspaceID)
	}
	s.queues[r.WorkspaceID] = append(s.queues[r.WorkspaceID], e)
	if !r.QueueDeadline.IsZero() {
		e.timer = time.AfterFunc(r.QueueDeadline.Sub(s.now()), func() { s.expire(e) })
	}
}

// unqueue takes e out of the queue and stops its timer.
func (s *Scheduler) unqueue(e *entry) {
	ws := e.req.WorkspaceID
	delete(s.waiting, e.req.RunID)
	if e.timer != nil {
		e.timer.Stop()
	}
	q := s.queues[ws]
	if i := slices.Index(q, e); i >= 0 {
		q = slices.Delete(q, i, i+1)
	}
	if len(q) > 0 {
		s.queues[ws] = q
		return
	}
	delete(s.queues, ws)
	if i := slices.Index(s.ring, ws); i >= 0 {
		s.ring = slices.Delete(s.ring, i, i+1)
		if i < s.turn {
			s.turn--
		}
	}
	if s.turn >= len(s.ring) {
		s.turn = 0
	}
}

// expire fails a request whose queue deadline passed.
func (s *Scheduler) expire(e *entry) {
	s.mu.Lock()
	if s.closed || s.waiting[e.req.RunID] != e {
		s.mu.Unlock()
		return // placed, released or shut down meanwhile
	}
	s.unqueue(e)
	msg := "no node could take the run before its queue deadline: every suitable node stayed busy"
	if b := s.blockers(&e.req, e.need); len(b) > 0 {
		msg = "no node could take the run before its queue deadline: " + join(b)
	}
	log := s.log
	s.mu.Unlock()
	ctx := context.Background()
	if err := s.runs.Fail(ctx, e.req.RunID, ReasonNoCapacity, msg); err != nil && cove.ErrorCode(err) != cove.Conflict {
		log.Error("could not fail a run after its queue deadline", "run", e.req.RunID, "err", err)
	}
}

// place reserves capacity for as many queued requests as fit, in queue
// order, and returns the reservations to dispatch. Without a dispatcher it
// places nothing.
func (s *Scheduler) place() []placement {
	if s.disp == nil || s.closed {
		return nil
	}
	var out []placement
	for len(s.ring) > 0 {
		placed := false
		for i := range len(s.ring) {
			idx := (s.turn + i) % len(s.ring)
			ws := s.ring[idx]
			p, ok := s.placeHead(ws)
			if !ok {
				continue
			}
			out = append(out, p)
			placed = true
			// The next turn goes to the workspace after ws; when ws's queue
			// emptied, unqueue removed it and idx already names the next.
			if len(s.ring) > idx && s.ring[idx] == ws {
				idx++
			}
			s.turn = idx
			if s.turn >= len(s.ring) {
				s.turn = 0
			}
			break
		}
		if !placed {
			break
		}
	}
	return out
}

// placeHead places the oldest request of ws that could ever be placed, if
// a node has room for it now.
func (s *Scheduler) placeHead(ws string) (placement, bool) {
	for _, e := range s.queues[ws] {
		if n := s.pick(&e.req, e.need); n != nil {
			s.unqueue(e)
			s.reserve(n, e.req.RunID, &hold{node: n.ID, need: e.need})
			return placement{runID: e.req.RunID, nodeID: n.ID, disp: s.disp}, true
		}
		if s.feasible(&e.req, e.need) {
			return placement{}, false // it waits for room; the rest wait behind it
		}
	}
	return placement{}, false
}

// reserve records h on n.
func (s *Scheduler) reserve(n *nodeState, runID string, h *hold) {
	if h.whole {
		n.whole++
	} else {
		n.reserved.cpu += h.need.cpu
		n.reserved.mem += h.need.mem
	}
	n.runs++
	s.held[runID] = h
	n.fix()
}

// free drops the reservation of runID, if any, and reports whether there
// was one.
func (s *Scheduler) free(runID string) bool {
	h := s.held[runID]
	if h == nil {
		return false
	}
	delete(s.held, runID)
	n := s.nodes[h.node]
	if n == nil {
		return true
	}
	if h.whole {
		n.whole--
	} else {
		n.reserved.cpu -= h.need.cpu
		n.reserved.mem -= h.need.mem
	}
	n.runs--
	n.fix()
	if !n.up && n.runs == 0 {
		delete(s.nodes, n.ID)
	}
	return true
}

// Release frees what runID holds: its reservation, or its place in the
// queue. Call it when a run ends, however it ends, and when a queued run
// is stopped; releasing a run the scheduler does not hold does nothing.
// The runs that fit in the freed room are dispatched in the background.
func (s *Scheduler) Release(ctx context.Context, runID string) {
	s.mu.Lock()
	if e := s.waiting[runID]; e != nil {
		s.unqueue(e)
	}
	var ps []placement
	if s.free(runID) {
		ps = s.place()
	}
	s.mu.Unlock()
	s.dispatchAsync(ps)
}

// NodeUp adds a node or updates one the scheduler knows, keeping its
// reservations, and places the queued runs that now fit, dispatching them
// in the background. Call it when an approved node that is not draining
// heartbeats for the first time, comes back from lost, or is approved or
// undrained while alive.
func (s *Scheduler) NodeUp(n Node) {
	if n.ID == "" {
		return
	}
	n.Drivers = slices.Clone(n.Drivers)
	n.Labels = cloneMap(n.Labels)
	s.mu.Lock()
	st := s.nodes[n.ID]
	if st == nil {
		st = &nodeState{index: -1}
		s.nodes[n.ID] = st
	}
	s.removeFromClass(st)
	st.Node, st.capacity, st.up = n, amountOf(n.Capacity), true
	s.addToClass(st)
	ps := s.place()
	s.mu.Unlock()
	s.dispatchAsync(ps)
}

// NodeDown stops placing runs on a node: it was drained, lost or removed.
// The reservations of its runs stay until they are released.
func (s *Scheduler) NodeDown(nodeID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.nodes[nodeID]
	if st == nil {
		return
	}
	s.removeFromClass(st)
	st.up = false
	if st.runs == 0 {
		delete(s.nodes, nodeID)
	}
}

// dispatch hands placements to their nodes, in order. A failed dispatch
// frees the reservation and fails the run, and the room it frees is
// offered to the queue again.
func (s *Scheduler) dispatch(ctx context.Context, ps []placement) {
	for len(ps) > 0 {
		var again []placement
		for _, p := range ps {
			err := p.disp.Dispatch(ctx, p.runID, p.nodeID)
			if err == nil {
				continue
			}
			s.mu.Lock()
			log := s.log
			if s.free(p.runID) {
				again = append(again, s.place()...)
			}
			s.mu.Unlock()
			log.Warn("could not dispatch a run", "run", p.runID, "node", p.nodeID, "err", err)
			msg := "the run could not be started on node " + p.nodeID + ": " + cove.ErrorMessage(err)
			if err := s.runs.Fail(ctx, p.runID, ReasonInternal, msg); err != nil && cove.ErrorCode(err) != cove.Conflict {
				log.Error("could not fail a run that was not dispatched", "run", p.runID, "err", err)
			}
		}
		ps = again
	}
}

// dispatchAsync dispatches in the background, for callers that must not
// wait on nodes: heartbeats and run endings.
func (s *Scheduler) dispatchAsync(ps []placement) {
	if len(ps) > 0 {
		go s.dispatch(context.Background(), ps)
	}
}

// Stats is a snapshot of the scheduler.
type Stats struct {
	// Queued counts the runs waiting for a node, by workspace in
	// QueuedByWorkspace ("" for none).
	Queued            int            `json:"queued"`
	QueuedByWorkspace map[string]int `json:"queued_by_workspace"`
	// Nodes are the nodes that are up or still hold reservations, by ID.
	Nodes []NodeStats `json:"nodes"`
}

// NodeStats is what a node holds.
type NodeStats struct {
	ID          string             `json:"id"`
	WorkspaceID string             `json:"workspace_id,omitempty"`
	Up          bool               `json:"up"` // takes new runs
	Capacity    runproto.Resources `json:"capacity"`
	Reserved    runproto.Resources `json:"reserved"`
	Runs        int                `json:"runs"` // reservations held
}

// Stats returns a snapshot of the queue and the reservations.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Queued: len(s.waiting), QueuedByWorkspace: map[string]int{}, Nodes: make([]NodeStats, 0, len(s.nodes))}
	for ws, q := range s.queues {
		st.QueuedByWorkspace[ws] = len(q)
	}
	for _, n := range s.nodes {
		st.Nodes = append(st.Nodes, n.stats())
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].ID < st.Nodes[j].ID })
	return st
}

// NodeStats returns what one node holds, and false when the scheduler
// does not know it (it is not up and holds nothing).
func (s *Scheduler) NodeStats(nodeID string) (NodeStats, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[nodeID]
	if n == nil {
		return NodeStats{}, false
	}
	return n.stats(), true
}

func (n *nodeState) stats() NodeStats {
	reserved := n.reserved.resources()
	if n.whole > 0 {
		reserved = n.capacity.resources()
	}
	return NodeStats{ID: n.ID, WorkspaceID: n.WorkspaceID, Up: n.up, Capacity: n.capacity.resources(), Reserved: reserved, Runs: n.runs}
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
