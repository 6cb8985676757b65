package node

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/authz"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/scheduler"
)

// live is what the registry knows of a node beyond the store: its last
// heartbeat, its lost timer and what the scheduler was given.
type live struct {
	node  Node               // the stored facts, kept in step
	hb    runproto.Heartbeat // the last heartbeat, when heard
	heard bool               // a heartbeat came since this process started
	seen  time.Time          // when it came
	dirty bool               // seen is not written to last_seen_at yet
	back  bool               // came back from lost, but lost_at is still set in the store
	timer *time.Timer        // fires lost; re-armed by each heartbeat
	due   time.Time          // when the node is lost without another heartbeat
	up    bool               // the scheduler has the node
	given scheduler.Node
}

// online reports whether the node heartbeated since this process started
// and has not been lost since.
func (l *live) online() bool { return l.heard && l.node.LostAt == nil }

// target returns the node as the scheduler should see it, and false when
// it should not take runs: not approved, draining, lost, not heard from,
// or with none of its drivers available. The heartbeat may lower what the
// node enrolled with, never raise it.
func (l *live) target() (scheduler.Node, bool) {
	n := &l.node
	if n.ApprovedAt == nil || n.Draining || n.LostAt != nil || !l.heard {
		return scheduler.Node{}, false
	}
	c := n.Capacity
	if hc := l.hb.Capacity; hc.CPUs > 0 || hc.MemoryBytes > 0 || hc.DiskBytes > 0 {
		c = runproto.Resources{CPUs: lower(c.CPUs, hc.CPUs), MemoryBytes: lower(c.MemoryBytes, hc.MemoryBytes), DiskBytes: lower(c.DiskBytes, hc.DiskBytes)}
	}
	drivers := n.Drivers
	// Only a heartbeat that lacks a driver costs a new list: the usual one
	// reports them all, thousands of times a second.
	if l.hb.Drivers != nil && !containsAll(l.hb.Drivers, n.Drivers) {
		drivers = nil
		for _, d := range n.Drivers {
			if slices.Contains(l.hb.Drivers, d) {
				drivers = append(drivers, d)
			}
		}
	}
	if len(drivers) == 0 {
		return scheduler.Node{}, false
	}
	return scheduler.Node{ID: n.ID, WorkspaceID: n.WorkspaceID, Capacity: c, Drivers: drivers, Labels: n.Labels, TEE: n.TEE}, true
}

// containsAll reports whether have holds every element of want.
func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// lower returns the smaller of a declared amount and a reported one; a
// report of zero says nothing.
func lower[T int64 | float64](declared, reported T) T {
	if reported > 0 && reported < declared {
		return reported
	}
	return declared
}

func sameNode(a, b scheduler.Node) bool {
	return a.ID == b.ID && a.WorkspaceID == b.WorkspaceID && a.Capacity == b.Capacity && a.TEE == b.TEE &&
		slices.Equal(a.Drivers, b.Drivers) && maps.Equal(a.Labels, b.Labels)
}

// sync brings the scheduler in line with l. Called with s.mu held, so that
// NodeUp and NodeDown of one node reach the scheduler in order.
func (s *Service) sync(l *live) {
	want, ok := l.target()
	switch {
	case ok && (!l.up || !sameNode(l.given, want)):
		s.sched.NodeUp(want)
		l.up, l.given = true, want
	case !ok && l.up:
		s.sched.NodeDown(l.node.ID)
		l.up = false
	}
}

// arm (re)starts l's lost timer. Called with s.mu held. The node's one
// timer is reset, not replaced: thousands of nodes heartbeating allocate
// nothing here. A timer that fired just before a heartbeat reset it finds
// the node due later and does nothing.
func (s *Service) arm(l *live) {
	l.due = time.Now().Add(s.cfg.LostAfter)
	if l.timer == nil {
		l.timer = time.AfterFunc(s.cfg.LostAfter, func() { s.lost(l) })
		return
	}
	l.timer.Reset(s.cfg.LostAfter)
}

// storeEvery is how often the heartbeats seen are written to last_seen_at,
// in one batch: once per LostAfter (at most 15 s), so the stored value is
// never older than the time after which a node counts as lost (this
// process's lists show the live value anyway), and thousands of nodes do
// not turn into a write per heartbeat.
func (s *Service) storeEvery() time.Duration { return min(15*time.Second, s.cfg.LostAfter) }

// flushLoop writes the heartbeats seen every storeEvery until Close.
func (s *Service) flushLoop() {
	defer close(s.flushDone)
	t := time.NewTicker(s.storeEvery())
	defer t.Stop()
	for {
		select {
		case <-s.stopFlush:
			return
		case <-t.C:
			s.flushSeen()
		}
	}
}

// flushSeen writes last_seen_at of the nodes heard from since the last
// flush, grouped by the second their heartbeat came in (a few statements
// per flush, whatever the number of nodes). What fails to be written is
// tried again at the next flush.
func (s *Service) flushSeen() {
	s.mu.Lock()
	batches := map[time.Time][]string{}
	for id, l := range s.live {
		if l.dirty {
			l.dirty = false
			at := l.seen.Truncate(time.Second)
			batches[at] = append(batches[at], id)
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.storeEvery())
	defer cancel()
	for at, ids := range batches {
		if err := s.store.MarkNodesSeen(ctx, ids, at); err != nil {
			s.log.Warn("could not record heartbeats; retrying at the next flush", "nodes", len(ids), "err", err)
			s.mu.Lock()
			for _, id := range ids {
				if l := s.live[id]; l != nil {
					l.dirty = true
				}
			}
			s.mu.Unlock()
		}
	}
}

// Heartbeat records that a node is alive. The first heartbeat of an
// approved node that is not draining, and the first after it was lost,
// give it to the scheduler. It returns invalid for a malformed node ID,
// not_found for a node that is not enrolled (or was removed), and
// forbidden for a node that waits for approval (its heartbeat still
// counts, so admins see it online).
func (s *Service) Heartbeat(ctx context.Context, hb runproto.Heartbeat) error {
	id := hb.NodeID
	if !cove.ValidID("node", id) {
		return cove.Errorf(cove.Invalid, "%q is not a node ID", id)
	}
	notFound := func() error { return cove.Errorf(cove.NotFound, "node %s is not enrolled; enroll it again", id) }
	s.mu.Lock()
	l, removed, closed := s.live[id], s.removed[id], s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return cove.Errorf(cove.Unavailable, "the control plane is shutting down")
	case removed:
		return notFound()
	}
	if l == nil {
		n, err := s.store.FindNodeByID(ctx, id)
		if cove.ErrorCode(err) == cove.NotFound {
			return notFound()
		} else if err != nil {
			return err
		}
		s.mu.Lock()
		if s.removed[id] {
			s.mu.Unlock()
			return notFound()
		}
		if l = s.live[id]; l == nil {
			l = &live{node: *n}
			s.live[id] = l
		}
		s.mu.Unlock()
	}

	now := s.now()
	s.mu.Lock()
	if s.closed || s.live[id] != l {
		s.mu.Unlock()
		return notFound() // removed meanwhile
	}
	wasLost := l.node.LostAt != nil
	l.node.LostAt = nil
	l.hb, l.heard, l.seen = hb, true, now
	// A node coming back is written at once, lost_at cleared with it;
	// every other heartbeat waits for the next batch (flushSeen).
	write := wasLost || l.back
	l.dirty, l.back = !write, false
	s.arm(l)
	s.sync(l)
	n := l.node
	s.mu.Unlock()

	if write {
		if err := s.store.MarkNodeSeen(ctx, id, now); err != nil {
			s.mu.Lock()
			l.back = true // try again at the next heartbeat
			s.mu.Unlock()
			return err
		}
	}
	if wasLost {
		s.log.Info("node is back", "node", id, "name", n.Name)
		s.audit(ctx, n, "node.recover", "node "+n.Name+" heartbeats again")
	}
	if n.ApprovedAt == nil {
		return cove.Errorf(cove.Forbidden, "node %s waits for an admin's approval", id)
	}
	return nil
}

// lost marks a node lost when its timer fires and no heartbeat came since
// it was armed: the scheduler stops using it and its runs fail.
func (s *Service) lost(l *live) {
	s.mu.Lock()
	id := l.node.ID
	if s.closed || s.live[id] != l || l.node.LostAt != nil || time.Now().Before(l.due) {
		s.mu.Unlock()
		return
	}
	now := s.now()
	l.node.LostAt = &now
	s.sync(l)
	n := l.node
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s.log.Warn("node lost: no heartbeat", "node", id, "name", n.Name, "after", s.cfg.LostAfter)
	if err := s.store.MarkNodeLost(ctx, id, now); err != nil {
		s.log.Error("could not record a lost node", "node", id, "err", err)
	}
	s.audit(ctx, n, "node.lost", "no heartbeat for "+s.cfg.LostAfter.String())
	s.failLost(ctx, &n)
}

// failLost fails the active runs of a lost node.
func (s *Service) failLost(ctx context.Context, n *Node) {
	runs, err := s.activeRuns(ctx, n.ID)
	if err != nil {
		s.log.Error("could not find the runs of a lost node", "node", n.ID, "err", err)
		return
	}
	s.failRuns(ctx, runs, "node "+n.Name+" ("+n.ID+") sent no heartbeat for "+s.cfg.LostAfter.String())
}

// audit records what a node did by itself: it has no principal.
func (s *Service) audit(ctx context.Context, n Node, action, detail string) {
	e := audit.Entry{ID: cove.NewID("aud"), Time: s.now(), WorkspaceID: n.WorkspaceID, Action: action, Target: n.ID, Outcome: audit.Success, Detail: detail}
	if err := s.store.RecordAudit(ctx, e); err != nil {
		s.log.Error("could not audit a node event", "node", n.ID, "action", action, "err", err)
	}
}

// updated applies an admin's change to the live view and the scheduler.
func (s *Service) updated(n *Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.live[n.ID]; l != nil {
		l.node.ApprovedAt, l.node.ApprovedBy, l.node.Draining = n.ApprovedAt, n.ApprovedBy, n.Draining
		s.sync(l)
	}
}

// forget drops a node being removed: no timer, no scheduler, and
// heartbeats already in flight find it gone.
func (s *Service) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removed[id] = true
	if l := s.live[id]; l != nil {
		if l.timer != nil {
			l.timer.Stop()
		}
		delete(s.live, id)
	}
	s.sched.NodeDown(id)
}

// Start prepares the registry after a start of the control plane: it
// writes every node's relations again (repairing grants that failed after
// their commit), arms a lost timer for every node that was not lost, so
// that one that never comes back is marked lost after LostAfter, and fails
// the runs still active on nodes that were lost, which a crash may have
// left behind. Nodes take runs again at their first heartbeat.
func (s *Service) Start(ctx context.Context) error {
	var (
		tuples []authz.Tuple
		lost   []*Node
	)
	for page := (cove.Page{Limit: cove.MaxPageLimit}); ; {
		nodes, err := s.store.FindNodes(ctx, Filter{Page: page})
		if err != nil {
			return err
		}
		s.mu.Lock()
		for _, n := range nodes {
			tuples = append(tuples, parents(n)...)
			if n.RevokedAt != nil {
				s.removed[n.ID] = true // its heartbeats cannot arrive, but never revive it
				continue
			}
			if n.LostAt != nil {
				lost = append(lost, n)
				continue
			}
			if s.live[n.ID] == nil {
				l := &live{node: *n}
				s.live[n.ID] = l
				s.arm(l)
			}
		}
		s.mu.Unlock()
		if len(nodes) < page.Limit {
			break
		}
		page.After = nodes[len(nodes)-1].ID
	}
	if err := s.authz.Grant(ctx, tuples...); err != nil {
		return err
	}
	for _, n := range lost {
		if n.ApprovedAt != nil {
			s.failLost(ctx, n)
		}
	}
	return nil
}

// Close stops the lost timers and the batch writer of last_seen_at.
// Heartbeats after it are refused. It is safe to call more than once.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	for _, l := range s.live {
		if l.timer != nil {
			l.timer.Stop()
		}
	}
	s.mu.Unlock()
	s.closeOnce.Do(func() { close(s.stopFlush) })
	<-s.flushDone
}
