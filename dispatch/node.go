package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sandbox"
)

// Dispatch starts a run on the node the scheduler reserved for it: the run
// moves to scheduled on nodeID, gets a NATS credential for its agent that
// expires with the run, moves to provisioning, and the node is asked to
// start the sandbox. The run is provisioning before the node hears of it,
// so an agent that starts at once finds its run ready for it.
//
// Errors: those of Advance; Unavailable when the node is not connected or
// does not answer in time; the node's own error when it refuses. On an
// error the caller fails the run; a sandbox the node started anyway is
// killed at its next reconcile.
func (d *Dispatcher) Dispatch(ctx context.Context, runID, nodeID string) error {
	if err := d.dispatch(ctx, runID, nodeID); err != nil {
		d.forget(runID, err) // the run fails; nothing of it is kept here
		return err
	}
	d.armLost(runID)
	return nil
}

func (d *Dispatcher) dispatch(ctx context.Context, runID, nodeID string) error {
	run, err := d.cfg.Runs.Advance(ctx, runID, computation.Scheduled, computation.RunUpdate{NodeID: nodeID})
	if err != nil {
		return err
	}
	man, err := d.manifestOf(ctx, run)
	if err != nil {
		return err
	}
	l := man.m.Limits
	limits := sandbox.Limits{
		CPUs:        l.CPUs,
		MemoryBytes: l.MemoryBytes,
		DiskBytes:   l.DiskBytes,
		Duration:    time.Duration(l.MaxDurationSeconds) * time.Second,
	}
	ttl := d.cfg.RunCredentialTTL
	if ttl <= 0 {
		ttl = limits.Duration
		if ttl <= 0 {
			ttl = defaultMaxRun
		}
		ttl += credentialSlack
	}
	cred, err := d.cfg.Bus.IssueRunCredential(runID, time.Now().Add(ttl))
	if err != nil {
		return err
	}
	creds, err := cred.Creds()
	if err != nil {
		return err
	}
	if _, err := d.cfg.Runs.Advance(ctx, runID, computation.Provisioning, computation.RunUpdate{}); err != nil {
		return err
	}
	start := runproto.Command{Start: &runproto.Start{
		RunID:   runID,
		Driver:  run.Driver,
		Limits:  limits,
		NATSURL: d.cfg.Bus.ClientURL(),
		Creds:   string(creds),
	}}
	return d.nodeRequest(ctx, nodeID, start, startTimeout)
}

// StopRun asks the run's agent (on RunControl) and its node (on
// NodeControl) to stop it, and drops what this replica holds for the run:
// an open result upload is aborted. The caller records the run's new state.
// Errors: Unavailable when the node is not connected or does not answer;
// the node's own error. The agent is told without waiting for an answer:
// the node's stop does not depend on it.
func (d *Dispatcher) StopRun(ctx context.Context, run *computation.Run) error {
	reason := string(run.Reason)
	if reason == "" {
		reason = string(computation.StoppedByUser)
	}
	stop := runproto.Command{Stop: &runproto.Stop{RunID: run.ID, Reason: reason}}
	data, _ := json.Marshal(stop) // plain structs: cannot fail
	if err := d.nc.Publish(natsbus.RunControl(run.ID), data); err != nil {
		d.log.Warn("cannot tell an agent to stop", "run", run.ID, "err", err)
	}
	d.forget(run.ID, cove.Errorf(cove.Conflict, "the run is stopping"))
	var err error
	if run.NodeID != "" {
		err = d.nodeRequest(ctx, run.NodeID, stop, nodeTimeout)
	}
	d.cfg.Scheduler.Release(ctx, run.ID)
	return err
}

// nodeRequest sends a command to a node and returns its answer's error.
func (d *Dispatcher) nodeRequest(ctx context.Context, node string, cmd runproto.Command, timeout time.Duration) error {
	data, err := json.Marshal(cmd)
	if err != nil {
		return cove.Wrap(err, "cannot encode a node command")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg, err := d.nc.RequestWithContext(ctx, natsbus.NodeControl(node), data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return &cove.Error{Code: cove.Unavailable, Message: "node " + node + " is not connected", Err: err}
	case err != nil:
		return &cove.Error{Code: cove.Unavailable, Message: "node " + node + " did not answer", Err: err}
	}
	var rep runproto.Reply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return &cove.Error{Code: cove.Unavailable, Message: "node " + node + " sent an unreadable answer", Err: err}
	}
	return rep.Error.Err()
}

// stopOnNode asks a run's node to remove its sandbox, in the background:
// callers are event handlers that must not wait for a node. A node that
// misses it kills the sandbox at its next reconcile.
// The reason is the run's failure reason, or its final state when it has
// none (succeeded).
func (d *Dispatcher) stopOnNode(run *computation.Run) {
	if run.NodeID == "" {
		return
	}
	reason := string(run.Reason)
	if reason == "" {
		reason = string(run.State)
	}
	cmd := runproto.Command{Stop: &runproto.Stop{RunID: run.ID, Reason: reason}}
	d.goSafe(func() {
		if err := d.nodeRequest(d.ctx, run.NodeID, cmd, nodeTimeout); err != nil {
			d.log.Warn("cannot stop a sandbox", "run", run.ID, "node", run.NodeID, "err", err)
		}
	})
}

// handleNodeHeartbeat records a node's heartbeat and, when the node has
// sandboxes of runs that are not active on it, tells it which are, so it
// kills the others.
func (d *Dispatcher) handleNodeHeartbeat(m *nats.Msg) {
	if !d.enter() {
		return
	}
	defer d.wg.Done()
	node, ok := natsbus.NodeFromSubject(m.Subject)
	if !ok {
		return
	}
	answer := m.Reply != "" && natsbus.InNodeInbox(node, m.Reply)
	var hb runproto.Heartbeat
	err := json.Unmarshal(m.Data, &hb)
	switch {
	case err != nil:
		err = cove.Errorf(cove.Invalid, "the heartbeat is not valid JSON")
	case hb.NodeID != node:
		// The server lets a node publish only on its own subject; the body
		// must say the same, or one node could report for another.
		err = cove.Errorf(cove.Invalid, "the heartbeat names node %q on the subject of node %q", hb.NodeID, node)
	default:
		ctx, cancel := d.handlerContext()
		err = d.cfg.Nodes.Heartbeat(ctx, hb)
		if err == nil {
			err = d.reconcile(ctx, node, hb.Running)
		}
		cancel()
	}
	if err != nil {
		d.log.Warn("node heartbeat refused", "node", node, "err", err)
	}
	if answer {
		d.replyJSON(m, runproto.Reply{Error: runproto.ErrorOf(err)}, err)
	}
}

// following reports whether this replica is in the middle of every one of
// runs: it served their manifests and has not seen them end (finish
// forgets a run). Those are active, so a heartbeat listing only them needs
// no look at the store; at worst a run that ended on another replica is
// reconciled once this one forgets it.
func (d *Dispatcher) following(runs []string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range runs {
		if l := d.runs[id]; l == nil || l.man == nil {
			return false
		}
	}
	return true
}

// reconcile sends the node the runs active on it when it runs any other.
// The Reconcile goes out in the background, one at a time per node.
func (d *Dispatcher) reconcile(ctx context.Context, node string, running []string) error {
	if len(running) == 0 || d.following(running) {
		return nil
	}
	runs, err := d.cfg.Runs.FindRunsOnNode(ctx, node)
	if err != nil {
		return err
	}
	active := make([]string, 0, len(runs))
	for _, r := range runs {
		if r.NodeID == node && r.State.Active() {
			active = append(active, r.ID)
		}
	}
	slices.Sort(active)
	// Only runs the node reported are stale: one dispatched since it
	// reported is active, whatever this read saw.
	var stale []string
	for _, id := range running {
		if _, found := slices.BinarySearch(active, id); !found {
			stale = append(stale, id)
		}
	}
	if len(stale) == 0 {
		return nil
	}
	d.mu.Lock()
	busy := d.reconciling[node]
	d.reconciling[node] = true
	d.mu.Unlock()
	if busy {
		return nil
	}
	cmd := runproto.Command{Reconcile: &runproto.Reconcile{Active: active, Stale: stale}}
	d.goSafe(func() {
		defer func() {
			d.mu.Lock()
			delete(d.reconciling, node)
			d.mu.Unlock()
		}()
		if err := d.nodeRequest(d.ctx, node, cmd, nodeTimeout); err != nil {
			d.log.Warn("cannot reconcile a node", "node", node, "err", err)
		}
	})
	return nil
}
