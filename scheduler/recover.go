package scheduler

import (
	"context"
	"slices"
	"strings"

	"github.com/covecompute/cove"
)

// Recover rebuilds the scheduler's state from the run store after a start:
// every active run that holds a node holds its reservation again, and
// queued runs go back in the queue in the order they were created, with
// their deadlines. Call it once at start, before nodes come up; a node
// that holds reservations but has not heartbeated yet takes no new runs
// until it does. Runs the scheduler already knows are left alone, so a
// second call does no harm.
func (s *Scheduler) Recover(ctx context.Context) error {
	runs, err := s.runs.ActiveRuns(ctx)
	if err != nil {
		return err
	}
	slices.SortStableFunc(runs, func(a, b ActiveRun) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})

	var lost []string // queued runs whose request is unknown
	s.mu.Lock()
	for _, r := range runs {
		if s.held[r.ID] != nil || s.waiting[r.ID] != nil || !r.Queued && r.NodeID == "" {
			continue
		}
		var (
			req   Request
			need  amount
			known = r.Request != nil
		)
		if known {
			req = *r.Request
			req.RunID, req.WorkspaceID = r.ID, r.WorkspaceID
			req.Labels = cloneMap(req.Labels)
			var err error
			if need, err = req.validate(); err != nil {
				s.log.Warn("cannot rebuild a run's placement request", "run", r.ID, "err", err)
				known = false
			}
		}
		if r.Queued {
			if !known {
				lost = append(lost, r.ID)
				continue
			}
			s.enqueue(req, need)
			continue
		}
		n := s.nodes[r.NodeID]
		if n == nil {
			n = &nodeState{Node: Node{ID: r.NodeID}, index: -1}
			s.nodes[r.NodeID] = n
		}
		h := &hold{node: r.NodeID, whole: true}
		if known {
			h = &hold{node: r.NodeID, need: need}
		}
		s.reserve(n, r.ID, h)
	}
	ps := s.place()
	s.mu.Unlock()
	s.dispatch(ctx, ps)

	for _, id := range lost {
		err := s.runs.Fail(ctx, id, ReasonInternal, "the control plane restarted and could not rebuild where the run may be placed; start it again")
		if err != nil && cove.ErrorCode(err) != cove.Conflict {
			return err
		}
	}
	return nil
}
