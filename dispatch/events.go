package dispatch

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
)

// EventsConsumer is the durable JetStream consumer of RUN_EVENTS that all
// replicas share. Its position survives restarts, so events published
// while no control plane ran are applied at the next Start.
const EventsConsumer = "cove-dispatch-run-events"

const (
	// maxEventDeliveries bounds how often an event that fails to apply for
	// a passing reason (the store is down) is tried before it is dropped.
	maxEventDeliveries = 10
	// maxEventRetryDelay caps the growing delay between those tries.
	maxEventRetryDelay = 30 * time.Second
	// maxMessage caps the length of an agent's message kept on the run.
	maxMessage = 1024
)

// agentStates are the states an agent may report.
var agentStates = []computation.State{
	computation.Attesting, computation.Receiving, computation.Running,
	computation.Publishing, computation.Succeeded, computation.Failed,
}

// agentReasons are the failure reasons an agent may report: what it can
// see go wrong inside the sandbox. The others (policy, quota, capacity,
// lost agents and nodes, stops) are the control plane's to decide.
var agentReasons = []computation.Reason{
	computation.AttestationFailed, computation.HashMismatch, computation.AlgorithmError,
	computation.InvalidAlgorithm, computation.OOM, computation.Timeout,
	computation.DiskFull, computation.Internal,
}

// startEvents creates or resumes the durable consumer and starts applying
// events. MaxAckPending 1 applies them strictly in stream order across all
// replicas, which keeps each run's events in the order its agent sent them;
// a run has a handful of events, so the throughput this costs is not felt.
func (d *Dispatcher) startEvents(ctx context.Context) error {
	cons, err := d.js.CreateOrUpdateConsumer(ctx, natsbus.StreamRunEvents, jetstream.ConsumerConfig{
		Durable:       EventsConsumer,
		Description:   "Run events applied by the control plane",
		FilterSubject: natsbus.AllRunEvents,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Minute,
		MaxAckPending: 1,
		MaxDeliver:    maxEventDeliveries,
	})
	if err != nil {
		return &cove.Error{Code: cove.Unavailable, Message: "cannot set up the run events consumer", Err: err}
	}
	cc, err := cons.Consume(d.handleEvent, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		d.log.Warn("run events consumer", "err", err)
	}))
	if err != nil {
		return &cove.Error{Code: cove.Unavailable, Message: "cannot consume run events", Err: err}
	}
	d.mu.Lock()
	d.consume = cc
	d.mu.Unlock()
	return nil
}

// handleEvent applies one event and acknowledges it, or asks for it again
// later when the store could not be reached.
func (d *Dispatcher) handleEvent(m jetstream.Msg) {
	if !d.enter() {
		m.Nak() // for another replica, or the next Start
		return
	}
	defer d.wg.Done()
	runID, ok := natsbus.RunFromSubject(m.Subject())
	var ev runproto.Event
	if !ok || json.Unmarshal(m.Data(), &ev) != nil {
		d.log.Warn("dropping an unreadable run event", "subject", m.Subject())
		m.Term()
		return
	}
	ctx, cancel := d.handlerContext()
	defer cancel()
	err := d.applyEvent(ctx, runID, ev)
	switch cove.ErrorCode(err) {
	case "":
		m.Ack()
	case cove.Unavailable, cove.Internal:
		delay := time.Second
		if md, merr := m.Metadata(); merr == nil {
			delay = min(time.Duration(1<<min(md.NumDelivered, 8))*time.Second, maxEventRetryDelay)
		}
		d.log.Warn("cannot apply a run event; trying again", "run", runID, "state", ev.State, "err", err, "delay", delay)
		m.NakWithDelay(delay)
	case cove.Conflict:
		// The run moved between the read and the write (the control plane
		// advanced it itself, or it ended): the event is late, as above.
		d.log.Debug("run event late", "run", runID, "seq", ev.Seq, "state", ev.State, "err", err)
		m.Ack()
	default:
		d.log.Warn("run event refused", "run", runID, "seq", ev.Seq, "state", ev.State, "err", err)
		m.Ack()
	}
}

// applyEvent applies what an agent reports, after checking it may report
// it. Events that are late or repeated (the run is past them) change
// nothing, so a redelivery is harmless.
func (d *Dispatcher) applyEvent(ctx context.Context, runID string, ev runproto.Event) error {
	to := computation.State(ev.State)
	if !slices.Contains(agentStates, to) {
		return cove.Errorf(cove.Forbidden, "agents may not report state %q", ev.State)
	}
	reason := computation.Reason(ev.Reason)
	if to == computation.Failed && !slices.Contains(agentReasons, reason) {
		return cove.Errorf(cove.Forbidden, "agents may not report failure reason %q", ev.Reason)
	}
	if to != computation.Failed && reason != "" {
		return cove.Errorf(cove.Invalid, "only a failure carries a reason")
	}
	run, err := d.cfg.Runs.FindRun(ctx, runID)
	if err != nil {
		return err
	}
	switch {
	case run.State == to && !to.Terminal():
		// Repeated, or the control plane got there first (receiving): the
		// run's message stays what the control plane wrote.
		return nil
	case run.State.Terminal() && run.State != to:
		return nil // the run ended meanwhile, by another hand
	case !to.Terminal() && slices.Index(computation.States, to) < slices.Index(computation.States, run.State):
		return nil // late: the run is past it
	case to == computation.Receiving:
		return cove.Errorf(cove.Forbidden, "a run receives its inputs once the control plane accepted its attestation")
	case to == computation.Succeeded && run.ResultSHA256 == "":
		return cove.Errorf(cove.Forbidden, "a run succeeds only once its result is committed")
	}
	at := ev.Time
	if now := time.Now(); at.IsZero() || at.After(now) {
		at = now // the agent's clock is not trusted to run ahead
	}
	upd := computation.RunUpdate{
		Reason:     reason,
		Message:    cleanMessage(ev.Message),
		ExitCode:   ev.ExitCode,
		CPUSeconds: ev.CPUTime,
		PeakMemory: ev.PeakMemory,
		At:         at,
	}
	run, err = d.cfg.Runs.Advance(ctx, runID, to, upd)
	if err != nil {
		return err
	}
	if to.Terminal() {
		d.finish(ctx, run, ev.LogLines)
	}
	return nil
}

// cleanMessage keeps an agent's message short and valid UTF-8.
func cleanMessage(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxMessage {
		return s
	}
	cut := maxMessage
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// finish does what follows a run's end on this replica: forget the run,
// wake log followers (logLines is the agent's final count, or -1 when it
// gave none), stop the sandbox and free the reservation. Every step is
// idempotent, so a redelivered terminal event does no harm.
func (d *Dispatcher) finish(ctx context.Context, run *computation.Run, logLines int64) {
	d.forget(run.ID, cove.Errorf(cove.Conflict, "run %s is %s", run.ID, run.State))
	d.notifyEnd(run.ID, logLines)
	d.stopOnNode(run)
	d.cfg.Scheduler.Release(ctx, run.ID)
}

// failRun fails an active run for reason and finishes it. A run that ended
// meanwhile is only forgotten.
func (d *Dispatcher) failRun(ctx context.Context, runID string, reason computation.Reason, message string) {
	run, err := d.cfg.Runs.Advance(ctx, runID, computation.Failed, computation.RunUpdate{Reason: reason, Message: message})
	if err != nil {
		if cove.ErrorCode(err) != cove.Conflict {
			d.log.Error("cannot fail a run", "run", runID, "reason", reason, "err", err)
		}
		d.forget(runID, err)
		return
	}
	d.finish(ctx, run, -1)
}

// handleRunHeartbeat notes that a run's agent is alive.
func (d *Dispatcher) handleRunHeartbeat(m *nats.Msg) {
	if run, ok := natsbus.RunFromSubject(m.Subject); ok {
		d.armLost(run)
	}
}

// armLost (re)starts the timer that fails run with agent_lost when its
// agent stays silent for AgentLostAfter.
func (d *Dispatcher) armLost(run string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	l := d.localFor(run)
	l.lastBeat = time.Now()
	if l.lost != nil {
		l.lost.Reset(d.cfg.AgentLostAfter)
		return
	}
	l.lost = time.AfterFunc(d.cfg.AgentLostAfter, func() { d.agentLost(run) })
}

// agentLost fails a run whose agent fell silent, if it still has an agent
// to lose. Every replica sees every heartbeat and has its own timer, so
// several may get here; the store lets only one fail the run.
func (d *Dispatcher) agentLost(runID string) {
	d.mu.Lock()
	l := d.runs[runID]
	// A heartbeat that came in while the timer fired has re-armed it.
	fresh := l != nil && time.Since(l.lastBeat) < d.cfg.AgentLostAfter
	d.mu.Unlock()
	if l == nil || fresh || !d.enter() {
		return
	}
	defer d.wg.Done()
	ctx, cancel := d.handlerContext()
	defer cancel()
	run, err := d.cfg.Runs.FindRun(ctx, runID)
	if err != nil || !hasAgent(run.State) {
		d.forget(runID, nil)
		return
	}
	// An agent stops heartbeating once its final event is out. Under load
	// the event consumer can be further behind than AgentLostAfter; the
	// agent is not lost if its final event is stored, only not applied yet.
	if ev := d.lastTerminalEvent(ctx, runID); ev != nil {
		d.armLost(runID)
		return
	}
	d.failRun(ctx, runID, computation.AgentLost, "the agent sent no heartbeat for "+d.cfg.AgentLostAfter.String())
}

// hasAgent reports whether a run in s has, or is about to have, an agent.
func hasAgent(s computation.State) bool {
	i := slices.Index(computation.States, s)
	return i >= slices.Index(computation.States, computation.Provisioning) && i <= slices.Index(computation.States, computation.Publishing)
}

// rearm starts the agent-lost timer of every run that has an agent, so a
// restarted control plane notices agents that died while it was down.
func (d *Dispatcher) rearm(ctx context.Context) error {
	runs, err := d.cfg.Runs.FindActiveRuns(ctx)
	if err != nil {
		return err
	}
	for _, r := range runs {
		if hasAgent(r.State) {
			d.armLost(r.ID)
		}
	}
	return nil
}

// endWaiter wakes the log followers of a run on this replica when the run
// ends here.
type endWaiter struct {
	ch    chan struct{}
	final int64 // the agent's final log line count, or -1; set before ch closes
	n     int   // followers
}

// watchEnd registers a follower of run.
func (d *Dispatcher) watchEnd(run string) *endWaiter {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.ends[run]
	if w == nil {
		w = &endWaiter{ch: make(chan struct{}), final: -1}
		d.ends[run] = w
	}
	w.n++
	return w
}

// unwatchEnd removes a follower of run.
func (d *Dispatcher) unwatchEnd(run string, w *endWaiter) {
	d.mu.Lock()
	defer d.mu.Unlock()
	w.n--
	if w.n == 0 && d.ends[run] == w {
		delete(d.ends, run)
	}
}

// notifyEnd wakes the followers of a run that ended.
func (d *Dispatcher) notifyEnd(run string, final int64) {
	d.mu.Lock()
	w := d.ends[run]
	delete(d.ends, run)
	d.mu.Unlock()
	if w != nil {
		w.final = final
		close(w.ch)
	}
}
