package computation

import (
	"context"
	"io"
	"slices"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/authz"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/scheduler"
)

// runNotFound is the answer for a run that does not exist or that p may not
// know exists.
func runNotFound(id string) string { return "run " + id + " not found" }

// findRun returns run id when p may see its computation and hold
// relation on it.
func (s *Service) findRun(ctx context.Context, p cove.Principal, id, relation string) (*Run, error) {
	if p.UserID == "" {
		return nil, cove.Errorf(cove.Unauthenticated, "sign in first")
	}
	r, err := s.store.FindRunByID(ctx, id)
	if cove.ErrorCode(err) == cove.NotFound {
		return nil, cove.Errorf(cove.NotFound, "%s", runNotFound(id))
	} else if err != nil {
		return nil, err
	}
	if err := s.authz.RequireVisible(ctx, p.Subject(), authz.CanView, relation, authz.Computation(r.ComputationID), runNotFound(id)); err != nil {
		return nil, err
	}
	return r, nil
}

// StartRun starts a run of a computation: it checks every blocker, as
// DryRun does, and refuses with all of them as details (Forbidden when a
// permission, policy, approval or the catalog stands in the way, Invalid
// otherwise). The run is queued until the scheduler places it or its
// queue deadline passes. The first run freezes the computation.
func (s *Service) StartRun(ctx context.Context, p cove.Principal, computationID string) (*Run, error) {
	if err := s.require(ctx, p, computationID, authz.CanRun); err != nil {
		return nil, err
	}
	if s.Scheduler == nil {
		return nil, cove.Errorf(cove.Unavailable, "no scheduler is running; runs cannot be placed yet")
	}
	c, err := s.store.FindComputationByID(ctx, computationID)
	if err != nil {
		return nil, err
	}
	bs, err := s.blockers(ctx, p, c)
	if err != nil {
		return nil, err
	}
	if len(bs) > 0 {
		return nil, blockedError(bs)
	}
	timeout := s.QueueTimeout
	if timeout <= 0 {
		timeout = DefaultQueueTimeout
	}
	now := s.now()
	r := &Run{
		ID: cove.NewID("run"), ComputationID: c.ID, WorkspaceID: c.WorkspaceID, State: Queued,
		Driver: DriverFor(c.Manifest.Algorithm.Kind), ManifestSHA256: c.ManifestSHA256,
		CreatedBy: p.UserID, CreatedAt: now, UpdatedAt: now, QueueDeadline: now.Add(timeout),
	}
	err = s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.LockComputation(ctx, c.ID); err != nil {
			return err
		}
		cur, err := tx.FindComputationByID(ctx, c.ID)
		if err != nil {
			return err
		}
		if cur.ManifestSHA256 != c.ManifestSHA256 {
			return cove.Errorf(cove.Conflict, "computation %s changed while the run was being checked; try again", c.ID)
		}
		if err := tx.CreateRun(ctx, r); err != nil {
			return err
		}
		if err := tx.AppendRunEvent(ctx, &RunEvent{RunID: r.ID, Time: now, State: Queued}); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, *s.entry(p, c.WorkspaceID, "run.start", r.ID))
	})
	if err != nil {
		return nil, err
	}
	if err := s.Scheduler.Enqueue(ctx, request(c, r.ID, r.QueueDeadline)); err != nil {
		_, _ = s.Advance(context.WithoutCancel(ctx), r.ID, Failed, RunUpdate{Reason: Internal, Message: "the run could not be queued: " + cove.ErrorMessage(err)})
		return nil, err
	}
	return r, nil
}

// GetRun returns a run of a computation p may see.
func (s *Service) GetRun(ctx context.Context, p cove.Principal, id string) (*Run, error) {
	return s.findRun(ctx, p, id, authz.CanView)
}

// ListRuns returns a computation's runs, oldest first.
func (s *Service) ListRuns(ctx context.Context, p cove.Principal, computationID string, page cove.Page) ([]*Run, error) {
	if err := s.require(ctx, p, computationID, authz.CanView); err != nil {
		return nil, err
	}
	return s.store.FindRuns(ctx, RunFilter{ComputationID: computationID, Page: page.Normalize()})
}

// RunEvents returns a run's history: every state change in order.
func (s *Service) RunEvents(ctx context.Context, p cove.Principal, id string) ([]*RunEvent, error) {
	if _, err := s.GetRun(ctx, p, id); err != nil {
		return nil, err
	}
	return s.store.FindRunEvents(ctx, id)
}

// Stop stops a run; whoever may start runs of its computation may stop
// them. A queued run stops at once; a placed one is stopped on its node
// first. Stopping a stopped run is no error; one that ended otherwise is
// Conflict.
func (s *Service) Stop(ctx context.Context, p cove.Principal, id string) (*Run, error) {
	r, err := s.findRun(ctx, p, id, authz.CanRun)
	if err != nil {
		return nil, err
	}
	if r.State == Stopped {
		return r, nil
	}
	if r.State.Terminal() {
		return nil, cove.Errorf(cove.Conflict, "run %s has already %s", id, r.State)
	}
	who := p.Email
	if who == "" {
		who = p.UserID
	}
	u := RunUpdate{Reason: StoppedByUser, Message: "stopped by " + who}
	told := false
	if r.State != Queued {
		told = s.tellNode(ctx, r, &u)
	}
	out, from, err := s.advance(ctx, id, Stopped, u, s.entry(p, r.WorkspaceID, "run.stop", id))
	if err != nil {
		return nil, err
	}
	// The scheduler may have placed the run between the read and the stop.
	if !told && from != Queued && from != Stopped {
		s.tellNode(ctx, out, &RunUpdate{})
	}
	return out, nil
}

// tellNode asks the run's node to stop it and reports whether it could.
// A node that cannot be told kills the sandbox when it next reconciles,
// since the run is no longer active; u's message says so.
func (s *Service) tellNode(ctx context.Context, r *Run, u *RunUpdate) bool {
	if s.Stopper == nil {
		return false
	}
	if err := s.Stopper.StopRun(ctx, r); err != nil {
		u.Message += "; the node could not be told and stops it when it reconnects"
		return false
	}
	return true
}

// Restart starts a new run of the computation of a run that has ended.
// Nothing restarts runs automatically.
func (s *Service) Restart(ctx context.Context, p cove.Principal, id string) (*Run, error) {
	r, err := s.findRun(ctx, p, id, authz.CanRun)
	if err != nil {
		return nil, err
	}
	if !r.State.Terminal() {
		return nil, cove.Errorf(cove.Conflict, "run %s is still %s; stop it first", id, r.State)
	}
	return s.StartRun(ctx, p, r.ComputationID)
}

// Logs calls fn with the log lines of a run p may see whose Seq is above
// after, read through logs. With follow it waits for new lines until the
// run's last line; following a run that has ended just reads what exists.
// It returns the run as it is once the lines are read.
func (s *Service) Logs(ctx context.Context, p cove.Principal, id string, logs LogReader, after int64, follow bool, fn func(runproto.LogLine) error) (*Run, error) {
	r, err := s.GetRun(ctx, p, id)
	if err != nil {
		return nil, err
	}
	if logs == nil {
		return nil, cove.Errorf(cove.Unavailable, "run logs are not available yet; try again later")
	}
	if err := logs.ReadLogs(ctx, id, after, follow && !r.State.Terminal(), fn); err != nil {
		return nil, err
	}
	return s.store.FindRunByID(ctx, id)
}

// Result opens a run's sealed result for one of its result consumers;
// other participants are Forbidden, everyone else NotFound. A run without
// a result is Conflict. The caller closes the reader.
func (s *Service) Result(ctx context.Context, p cove.Principal, id string, blobs ResultBlobs) (io.ReadCloser, int64, *Run, error) {
	r, err := s.findRun(ctx, p, id, authz.CanReadResults)
	if err != nil {
		return nil, 0, nil, err
	}
	if r.ResultSHA256 == "" {
		return nil, 0, nil, cove.Errorf(cove.Conflict, "run %s has no result (it is %s)", id, r.State)
	}
	if blobs == nil {
		return nil, 0, nil, cove.Errorf(cove.Unavailable, "results are not available yet; try again later")
	}
	rc, n, err := blobs.Open(ctx, r.ResultSHA256)
	if err != nil {
		return nil, 0, nil, err
	}
	if err := s.store.RecordAudit(ctx, *s.entry(p, r.WorkspaceID, "run.result.read", id)); err != nil {
		rc.Close()
		return nil, 0, nil, err
	}
	return rc, n, r, nil
}

// FindRun returns a run. It checks nothing: it is for the control plane.
func (s *Service) FindRun(ctx context.Context, id string) (*Run, error) {
	return s.store.FindRunByID(ctx, id)
}

// FindActiveRuns returns every run that has not ended.
func (s *Service) FindActiveRuns(ctx context.Context) ([]*Run, error) {
	return s.store.FindRuns(ctx, RunFilter{Active: true})
}

// FindRunsOnNode returns the runs placed on a node that have not ended.
func (s *Service) FindRunsOnNode(ctx context.Context, nodeID string) ([]*Run, error) {
	if nodeID == "" {
		return nil, cove.Errorf(cove.Invalid, "a node ID is required")
	}
	return s.store.FindRuns(ctx, RunFilter{NodeID: nodeID, Active: true})
}

// CountActiveRuns counts a workspace's runs that have not ended; workspace
// deletion is refused while there are any.
func (s *Service) CountActiveRuns(ctx context.Context, workspaceID string) (int, error) {
	return s.store.CountRuns(ctx, RunFilter{WorkspaceID: workspaceID, Active: true})
}

// Manifest returns the manifest a run runs: its canonical JSON exactly as
// hashed, the digest and the parsed form. It checks nothing.
func (s *Service) Manifest(ctx context.Context, runID string) ([]byte, string, *Manifest, error) {
	r, err := s.store.FindRunByID(ctx, runID)
	if err != nil {
		return nil, "", nil, err
	}
	c, err := s.store.FindComputationByID(ctx, r.ComputationID)
	if err != nil {
		return nil, "", nil, err
	}
	// A computation that has run is frozen, so this holds unless the
	// store was changed behind the service's back.
	if c.ManifestSHA256 != r.ManifestSHA256 {
		return nil, "", nil, cove.Errorf(cove.Internal, "the manifest of run %s is not the one it was started with", runID)
	}
	return c.Canonical, c.ManifestSHA256, c.Manifest, nil
}

// RunRequest rebuilds what a run was enqueued with, so that a restarted
// scheduler can recover its queue and reservations. It checks nothing.
func (s *Service) RunRequest(ctx context.Context, r *Run) (scheduler.Request, error) {
	c, err := s.store.FindComputationByID(ctx, r.ComputationID)
	if err != nil {
		return scheduler.Request{}, err
	}
	return request(c, r.ID, r.QueueDeadline), nil
}

// Advance moves a run to state to, recording u, in one transaction that
// holds the run's row. A run already in to only takes u's non-zero fields,
// without a new event, so repeated reports are harmless. A run that has
// ended is Conflict; so is a move the state machine does not allow (see
// Move), and a reason on anything but failed or stopped is Invalid.
// Entering running sets StartedAt, ending sets FinishedAt and, after the
// commit, releases the run's resources in the scheduler. It checks no
// permission: it is for the control plane.
func (s *Service) Advance(ctx context.Context, id string, to State, u RunUpdate) (*Run, error) {
	r, _, err := s.advance(ctx, id, to, u, nil)
	return r, err
}

// advance is Advance that also records e, when not nil, and returns the
// state the run was in.
func (s *Service) advance(ctx context.Context, id string, to State, u RunUpdate, e *audit.Entry) (*Run, State, error) {
	if !to.Valid() {
		return nil, "", cove.Errorf(cove.Invalid, "%q is not a run state", to)
	}
	if u.Reason != "" && !slices.Contains(Reasons, u.Reason) {
		return nil, "", cove.Errorf(cove.Invalid, "%q is not a failure reason", u.Reason)
	}
	if u.Reason != "" && to != Failed && to != Stopped {
		return nil, "", cove.Errorf(cove.Invalid, "only a failed or stopped run has a reason, not a %s one", to)
	}
	now := s.now()
	at := now
	if !u.At.IsZero() {
		at = u.At.UTC().Truncate(time.Microsecond)
	}
	var (
		out  *Run
		from State
	)
	err := s.store.Atomic(ctx, func(tx Store) error {
		r, err := tx.LockRun(ctx, id)
		if err != nil {
			return err
		}
		from = r.State
		if r.State == to {
			apply(r, u)
			r.UpdatedAt, out = now, r
			return tx.UpdateRun(ctx, r)
		}
		if r.State.Terminal() {
			return cove.Errorf(cove.Conflict, "run %s has already %s", id, r.State)
		}
		if err := Move(r.State, to, u.Reason); err != nil {
			return err
		}
		apply(r, u)
		r.State, r.UpdatedAt = to, now
		if to == Running && r.StartedAt == nil {
			r.StartedAt = &at
		}
		if to.Terminal() {
			r.FinishedAt = &at
		}
		if err := tx.UpdateRun(ctx, r); err != nil {
			return err
		}
		if err := tx.AppendRunEvent(ctx, &RunEvent{RunID: id, Time: at, State: to, Reason: u.Reason, Message: u.Message}); err != nil {
			return err
		}
		if e != nil {
			if err := tx.RecordAudit(ctx, *e); err != nil {
				return err
			}
		}
		out = r
		return nil
	})
	if err != nil {
		return nil, from, err
	}
	if from != to && to.Terminal() && s.Scheduler != nil {
		s.Scheduler.Release(context.WithoutCancel(ctx), id)
	}
	return out, from, nil
}

// apply copies u's non-zero fields onto r.
func apply(r *Run, u RunUpdate) {
	if u.Reason != "" {
		r.Reason = u.Reason
	}
	if u.Message != "" {
		r.Message = u.Message
	}
	if u.NodeID != "" {
		r.NodeID = u.NodeID
	}
	if u.ExitCode != nil {
		code := *u.ExitCode
		r.ExitCode = &code
	}
	if u.CPUSeconds != 0 {
		r.CPUSeconds = u.CPUSeconds
	}
	if u.PeakMemory != 0 {
		r.PeakMemory = u.PeakMemory
	}
	if u.ResultSHA256 != "" {
		r.ResultSHA256 = u.ResultSHA256
	}
	if u.ResultSize != 0 {
		r.ResultSize = u.ResultSize
	}
}

// DatasetInUse reports whether a computation names the dataset; the catalog
// refuses to delete it while one does.
func (s *Service) DatasetInUse(ctx context.Context, id string) (bool, error) {
	n, err := s.store.ComputationsUsing(ctx, id, "")
	return n > 0, err
}

// AlgorithmInUse reports whether a computation names the algorithm.
func (s *Service) AlgorithmInUse(ctx context.Context, id string) (bool, error) {
	n, err := s.store.ComputationsUsing(ctx, "", id)
	return n > 0, err
}
