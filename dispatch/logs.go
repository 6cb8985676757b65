package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
)

const (
	// logIdleCheck is how long a follower that has read everything waits
	// for a line before it asks the store whether the run ended. It is the
	// fallback for runs that end on another replica; on this one followers
	// are woken at once.
	logIdleCheck = 2 * time.Second
	// logEndGrace is how long after the run ended a follower still waits
	// for lines the agent counted but the stream does not have, say lost
	// with a broken connection.
	logEndGrace = 10 * time.Second
	// logBuffer is how many log messages wait between the consumer and the
	// reader.
	logBuffer = 64
)

// ReadLogs calls fn with each log line of a run whose Seq is above
// afterSeq, in order, read from the start of the run's RUN_LOGS subject by
// an ordered consumer. Without follow it stops at the end the stream had
// when it was called. With follow it goes on until ctx ends, or the run has
// ended and every line the agent reported in its final event has been
// delivered (or, when the agent reported no count, every line in the
// stream). An error from fn stops the reading and is returned as it is.
// Other errors: Invalid for a malformed run ID, NotFound, Unavailable when
// JetStream does not answer or ctx ends.
func (d *Dispatcher) ReadLogs(ctx context.Context, runID string, afterSeq int64, follow bool, fn func(runproto.LogLine) error) error {
	// The ID goes into a subject filter: "*" or ">" would read every run's.
	if id, ok := natsbus.RunFromSubject(natsbus.RunLogs(runID)); !ok || id != runID {
		return cove.Errorf(cove.Invalid, "%q is not a run ID", runID)
	}
	if _, err := d.cfg.Runs.FindRun(ctx, runID); err != nil {
		return err
	}
	cons, err := d.js.OrderedConsumer(ctx, natsbus.StreamRunLogs, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{natsbus.RunLogs(runID)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return unavailable(ctx, "cannot read the run's logs", err)
	}
	lr := &logReader{d: d, run: runID, last: afterSeq, fn: fn}
	pending := cons.CachedInfo().NumPending
	if !follow {
		return lr.readN(ctx, cons, pending)
	}
	return lr.follow(ctx, cons, pending == 0)
}

// logReader delivers one reader's lines.
type logReader struct {
	d    *Dispatcher
	run  string
	last int64 // highest line Seq delivered or skipped
	fn   func(runproto.LogLine) error
}

// batch delivers the new lines of one LogBatch. Lines at or below the last
// one delivered are skipped: those the reader asked to skip, and any an
// agent sent twice.
func (lr *logReader) batch(data []byte) error {
	var b runproto.LogBatch
	if err := json.Unmarshal(data, &b); err != nil {
		lr.d.log.Warn("skipping an unreadable log batch", "run", lr.run)
		return nil
	}
	for _, l := range b.Lines {
		if l.Seq <= lr.last {
			continue
		}
		lr.last = l.Seq
		if err := lr.fn(l); err != nil {
			return err
		}
	}
	return nil
}

// readN delivers the first n messages.
func (lr *logReader) readN(ctx context.Context, cons jetstream.Consumer, n uint64) error {
	if n == 0 {
		return nil
	}
	it, err := cons.Messages()
	if err != nil {
		return unavailable(ctx, "cannot read the run's logs", err)
	}
	defer it.Stop()
	for range n {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return unavailable(ctx, "reading the run's logs failed", err)
		}
		if err := lr.batch(m.Data()); err != nil {
			return err
		}
	}
	return nil
}

// follow delivers lines as they come until the run's end. Nothing polls
// while lines flow: the end is noticed when this replica ends the run
// (notifyEnd), or, for a run that ends elsewhere, when the follower has
// been idle for logIdleCheck.
func (lr *logReader) follow(ctx context.Context, cons jetstream.Consumer, caughtUp bool) error {
	msgs := make(chan jetstream.Msg, logBuffer)
	stop := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-stop:
		}
	})
	if err != nil {
		return unavailable(ctx, "cannot follow the run's logs", err)
	}
	defer func() {
		close(stop)
		cc.Stop()
	}()
	w := lr.d.watchEnd(lr.run)
	defer lr.d.unwatchEnd(lr.run, w)
	ended := w.ch

	idle := time.NewTimer(logIdleCheck)
	defer idle.Stop()
	e := &logEnd{lr: lr, final: -1}
	// The store is asked once the backlog is read, so a follower of a run
	// that ended already stops there; after that only when the end is
	// likely or the follower idles.
	backlog := !caughtUp
	if !backlog {
		if done, err := e.check(ctx, true); done || err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return unavailable(ctx, "following the run's logs stopped", ctx.Err())
		case m := <-msgs:
			if err := lr.batch(m.Data()); err != nil {
				return err
			}
			md, err := m.Metadata()
			caughtUp = err == nil && md.NumPending == 0
			idle.Reset(logIdleCheck)
			if !caughtUp {
				continue
			}
			if backlog {
				backlog = false
			} else if !e.likely() {
				continue
			}
		case <-ended:
			ended = nil
			e.hint, e.final = true, w.final
		case <-idle.C:
			idle.Reset(logIdleCheck)
		}
		if done, err := e.check(ctx, caughtUp); done || err != nil {
			return err
		}
	}
}

// logEnd decides when a follower has everything.
type logEnd struct {
	lr       *logReader
	hint     bool      // this replica saw the run end
	final    int64     // lines the agent reported at its end; -1 unknown
	lookedUp bool      // final was looked up in RUN_EVENTS
	ended    time.Time // when the store first showed the run ended
}

// likely reports whether the end may have come, so that checking it after
// every message is worth a store read.
func (e *logEnd) likely() bool { return e.hint || !e.ended.IsZero() }

// check reports whether the follower is done: it has read all there is,
// the run has ended, and it has the agent's last line.
func (e *logEnd) check(ctx context.Context, caughtUp bool) (bool, error) {
	if !caughtUp {
		return false, nil
	}
	if e.ended.IsZero() {
		run, err := e.lr.d.cfg.Runs.FindRun(ctx, e.lr.run)
		if err != nil {
			return false, err
		}
		if !run.State.Terminal() {
			return false, nil
		}
		e.ended = time.Now()
	}
	if e.final < 0 && !e.lookedUp {
		e.final = e.lr.d.finalLogLines(ctx, e.lr.run)
		e.lookedUp = true
	}
	if e.lr.last >= e.final {
		return true, nil
	}
	if time.Since(e.ended) >= logEndGrace {
		e.lr.d.log.Warn("run logs end short of the agent's count", "run", e.lr.run, "last", e.lr.last, "count", e.final)
		return true, nil
	}
	return false, nil
}

// finalLogLines returns the log line count of the run's last event when
// that event ends the run, else 0: a run the control plane ended has no
// count, and its logs end where the stream does.
func (d *Dispatcher) finalLogLines(ctx context.Context, runID string) int64 {
	s, err := d.js.Stream(ctx, natsbus.StreamRunEvents)
	if err != nil {
		return 0
	}
	raw, err := s.GetLastMsgForSubject(ctx, natsbus.RunEvents(runID))
	if err != nil {
		return 0
	}
	var ev runproto.Event
	if json.Unmarshal(raw.Data, &ev) != nil || !computation.State(ev.State).Terminal() {
		return 0
	}
	return ev.LogLines
}

// unavailable wraps a JetStream or context error.
func unavailable(ctx context.Context, msg string, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = errors.Join(ctx.Err(), err)
	}
	return &cove.Error{Code: cove.Unavailable, Message: msg, Err: err}
}
