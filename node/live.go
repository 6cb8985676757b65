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
	node   Node                // the stored facts, kept in step
	hb     *runproto.Heartbeat // the last heartbeat since this process started
	seen   time.Time           // when it came
	stored time.Time           // when last_seen_at was last written
	timer  *time.Timer
	gen    uint64 // counts heartbeats; a timer armed before the last one is stale
	up     bool   // the scheduler has the node
	given  scheduler.Node
}

// online reports whether the node heartbeated since this process started
// and has not been lost since.
func (l *live) online() bool { return l.hb != nil && l.node.LostAt == nil }

// target returns the node as the scheduler should see it, and false when
// it should not take runs: not approved, draining, lost, not heard from,
// or with none of its drivers available. The heartbeat may lower what the
// node enrolled with, never raise it.
func (l *live) target() (scheduler.Node, bool) {
	n := &l.node
	if n.ApprovedAt == nil || n.Draining || n.LostAt != nil || l.hb == nil {
		return scheduler.Node{}, false
	}
	c := n.Capacity
	if hc := l.hb.Capacity; hc.CPUs > 0 || hc.MemoryBytes > 0 || hc.DiskBytes > 0 {
		c = runproto.Resources{CPUs: lower(c.CPUs, hc.CPUs), MemoryBytes: lower(c.MemoryBytes, hc.MemoryBytes), DiskBytes: lower(c.DiskBytes, hc.DiskBytes)}
	}
	drivers := n.Drivers
	if l.hb.Drivers != nil {
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

// arm (re)starts l's lost timer. Called with s.mu held.
func (s *Service) arm(l *live) {
	l.gen++
	if l.timer != nil {
		l.timer.Stop()
	}
	id, gen := l.node.ID, l.gen
	l.timer = time.AfterFunc(s.cfg.LostAfter, func() { s.lost(id, gen) })
}

// storeEvery is how often a heartbeating node's last_seen_at is written:
// often enough for lists to be a few seconds fresh, rarely enough that
// thousands of nodes do not turn into a write per heartbeat.
func (s *Service) storeEvery() time.Duration { return min(5*time.Second, s.cfg.LostAfter/3) }

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
	notFound := cove.Errorf(cove.NotFound, "node %s is not enrolled; enroll it again", id)
	s.mu.Lock()
	l, removed, closed := s.live[id], s.removed[id], s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return cove.Errorf(cove.Unavailable, "the control plane is shutting down")
	case removed:
		return notFound
	}
	if l == nil {
		n, err := s.store.FindNodeByID(ctx, id)
		if cove.ErrorCode(err) == cove.NotFound {
			return notFound
		} else if err != nil {
			return err
		}
		s.mu.Lock()
		if s.removed[id] {
			s.mu.Unlock()
			return notFound
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
		return notFound // removed meanwhile
	}
	wasLost := l.node.LostAt != nil
	l.node.LostAt = nil
	l.hb, l.seen = &hb, now
	s.arm(l)
	write := wasLost || now.Sub(l.stored) >= s.storeEvery()
	if write {
		l.stored = now
	}
	s.sync(l)
	n := l.node
	s.mu.Unlock()

	if write {
		if err := s.store.MarkNodeSeen(ctx, id, now); err != nil {
			s.mu.Lock()
			l.stored = time.Time{} // try again at the next heartbeat
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
func (s *Service) lost(id string, gen uint64) {
	s.mu.Lock()
	l := s.live[id]
	if s.closed || l == nil || l.gen != gen || l.node.LostAt != nil {
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

// Close stops the lost timers. Heartbeats after it are refused.
func (s *Service) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, l := range s.live {
		if l.timer != nil {
			l.timer.Stop()
		}
	}
}
