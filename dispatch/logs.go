package dispatch

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
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
	// logEndGrace is how long after the run ended, and after the last
	// batch it read, a follower still waits for lines the agent counted but
	// the stream does not have.
	logEndGrace = 10 * time.Second
	// logBuffer is how many log messages wait between the consumer and the
	// reader.
	logBuffer = 64
	// logHeldBatches and logHeldBytes bound the batches a reader holds back
	// while it waits for an earlier one. Batches may be stored out of order
	// (an agent sends again a batch whose answer it did not get, replicas
	// and workers store concurrently), but an agent never has more than its
	// window (16) of batches past the oldest one not yet stored, so only a
	// batch that will never come (refused, or an agent that skips numbers)
	// fills these; the reader then skips the gap.
	logHeldBatches = 64
	logHeldBytes   = 16 << 20
)

// ReadLogs calls fn with each log line of a run whose Seq is above
// afterSeq, in order, read from the start of the run's subject of RUN_LOGS
// (natsbus.RunLogStore) by an ordered consumer. Batches stored out of order
// are put back in order; a line is delivered once even when stored twice.
// Without follow it stops at the end the stream had when it was called; of
// a run that has not ended, it then leaves out the lines after one that is
// not stored yet, since that one may still come. With follow it goes on
// until ctx ends, or the run has ended and every line the agent reported in
// its final event has been delivered (or, when the agent reported no count,
// every line in the stream). An error from fn stops the reading and is
// returned as it is. Other errors: Invalid for a malformed run ID,
// NotFound, Unavailable when JetStream does not answer or ctx ends.
func (d *Dispatcher) ReadLogs(ctx context.Context, runID string, afterSeq int64, follow bool, fn func(runproto.LogLine) error) error {
	// The ID goes into a subject filter: "*" or ">" would read every run's.
	if id, ok := natsbus.RunFromSubject(natsbus.RunLogs(runID)); !ok || id != runID {
		return cove.Errorf(cove.Invalid, "%q is not a run ID", runID)
	}
	run, err := d.cfg.Runs.FindRun(ctx, runID)
	if err != nil {
		return err
	}
	cons, err := d.js.OrderedConsumer(ctx, natsbus.StreamRunLogs, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{natsbus.RunLogStore(runID)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		// Stop does not delete an ordered consumer, and the default 5 min
		// idle expiry let readers pile up to the server's 1,000 per stream.
		InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return unavailable(ctx, "cannot read the run's logs", err)
	}
	// Stop does not delete it either: delete it as the reader returns, so
	// that a stream read by hundreds of runs a second does not hold a
	// consumer per reader until InactiveThreshold (the server refuses more
	// than 1,000, and each one costs it work per stored message).
	defer d.deleteConsumer(ctx, cons)
	lr := &logReader{d: d, run: runID, last: afterSeq, fn: fn}
	pending := cons.CachedInfo().NumPending
	if !follow {
		// Every batch of a run that had ended is in the stream already.
		return lr.readN(ctx, cons, pending, run.State.Terminal())
	}
	return lr.follow(ctx, cons, pending == 0)
}

// deleteConsumer deletes a reader's ordered consumer, whose name changes
// when it recreates itself. A failure costs only the consumer's lifetime
// until InactiveThreshold.
func (d *Dispatcher) deleteConsumer(ctx context.Context, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteConsumerTimeout)
	defer cancel()
	if err := d.js.DeleteConsumer(ctx, natsbus.StreamRunLogs, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		d.log.Debug("cannot delete a log reader's consumer", "consumer", info.Name, "err", err)
	}
}

// deleteConsumerTimeout bounds the deletion of a log reader's consumer.
const deleteConsumerTimeout = 2 * time.Second

// logReader delivers one reader's lines.
type logReader struct {
	d    *Dispatcher
	run  string
	last int64 // highest line Seq delivered or skipped: every line up to it is done
	fn   func(runproto.LogLine) error

	held      []heldBatch // batches after a gap, by first Seq
	heldBytes int
	gapsFinal bool      // the run has ended and its logs are read: a gap stays a gap
	streamSeq uint64    // stream sequence of the last message read, when following
	readAt    time.Time // when the last message was read, when following
}

// heldBatch is a batch a reader holds back, with the size of its message.
type heldBatch struct {
	lines []runproto.LogLine
	size  int
}

func (h heldBatch) first() int64 { return h.lines[0].Seq }

// batch delivers the new lines of one LogBatch, which the control plane
// checked to be numbered one after the other. Lines at or below the last
// one delivered are skipped: those the reader asked to skip, and any an
// agent sent twice. A batch that does not follow the last line is held
// until the lines before it come.
func (lr *logReader) batch(data []byte) error {
	var b runproto.LogBatch
	if err := json.Unmarshal(data, &b); err != nil || len(b.Lines) == 0 {
		lr.d.log.Warn("skipping an unreadable log batch", "run", lr.run)
		return nil
	}
	if b.Lines[0].Seq <= lr.last+1 || lr.gapsFinal {
		if err := lr.deliver(b.Lines); err != nil {
			return err
		}
		return lr.drain(false)
	}
	lr.hold(b.Lines, len(data))
	if len(lr.held) <= logHeldBatches && lr.heldBytes <= logHeldBytes {
		return nil
	}
	lr.d.log.Warn("run logs miss lines; skipping them", "run", lr.run, "after", lr.last, "next", lr.held[0].first())
	return lr.drain(true)
}

// deliver calls fn with the lines above the last one delivered.
func (lr *logReader) deliver(lines []runproto.LogLine) error {
	for _, l := range lines {
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

// hold keeps a batch that does not follow the last line delivered, in order
// of first Seq; a batch held already is kept once.
func (lr *logReader) hold(lines []runproto.LogLine, size int) {
	i, found := slices.BinarySearchFunc(lr.held, lines[0].Seq, func(h heldBatch, seq int64) int {
		return cmp.Compare(h.first(), seq)
	})
	if found {
		return
	}
	lr.held = slices.Insert(lr.held, i, heldBatch{lines, size})
	lr.heldBytes += size
}

// drain delivers the held batches that now follow the last line delivered,
// or with skipGaps all of them.
func (lr *logReader) drain(skipGaps bool) error {
	for len(lr.held) > 0 && (skipGaps || lr.held[0].first() <= lr.last+1) {
		h := lr.held[0]
		lr.held = slices.Delete(lr.held, 0, 1)
		lr.heldBytes -= h.size
		if err := lr.deliver(h.lines); err != nil {
			return err
		}
	}
	return nil
}

// finalGaps tells the reader that no more batches will come: it delivers
// what it holds, skipping the lines that never came, and delivers whatever
// still comes at once.
func (lr *logReader) finalGaps() error {
	if len(lr.held) > 0 {
		lr.d.log.Warn("run logs miss lines", "run", lr.run, "after", lr.last, "next", lr.held[0].first())
	}
	lr.gapsFinal = true
	return lr.drain(true)
}

// readN delivers the first n messages. When ended, the run has ended and
// nothing more will come, so held batches are delivered too; otherwise the
// lines after a gap are left for a later read, since the gap may yet fill.
func (lr *logReader) readN(ctx context.Context, cons jetstream.Consumer, n uint64, ended bool) error {
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
	if ended {
		return lr.finalGaps()
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
			if err == nil {
				lr.streamSeq = md.Sequence.Stream
			}
			lr.readAt = time.Now()
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
	endSeq   uint64    // stream sequence of the run's last log message then
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
		e.endSeq = e.lr.d.lastLogSeq(ctx, e.lr.run)
	}
	// An agent reports its end only once all its batches are stored, and
	// the control plane stores none after the end. So once the follower
	// has read what the stream held at the end, a batch it holds back waits
	// for lines that will never come.
	if !e.lr.gapsFinal && e.lr.streamSeq >= e.endSeq {
		if err := e.lr.finalGaps(); err != nil {
			return true, err
		}
	}
	if e.final < 0 && !e.lookedUp {
		e.final = e.lr.d.finalLogLines(ctx, e.lr.run)
		e.lookedUp = true
	}
	if e.lr.last >= e.final {
		return true, e.lr.finalGaps()
	}
	// NumPending is the server's when it sent the message, and the client
	// buffers hundreds: a slow follower may seem caught up long before it
	// is. So the grace runs from the end or the last message read.
	if time.Since(e.ended) >= logEndGrace && time.Since(e.lr.readAt) >= logEndGrace {
		e.lr.d.log.Warn("run logs end short of the agent's count", "run", e.lr.run, "last", e.lr.last, "count", e.final)
		return true, e.lr.finalGaps()
	}
	return false, nil
}

// lastLogSeq returns the stream sequence of the run's last message in
// RUN_LOGS: 0 when it has none, the largest sequence when JetStream cannot
// tell.
func (d *Dispatcher) lastLogSeq(ctx context.Context, runID string) uint64 {
	s, err := d.js.Stream(ctx, natsbus.StreamRunLogs)
	if err == nil {
		var m *jetstream.RawStreamMsg
		if m, err = s.GetLastMsgForSubject(ctx, natsbus.RunLogStore(runID)); err == nil {
			return m.Sequence
		}
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0
	}
	return math.MaxUint64
}

// finalLogLines returns the log line count of the run's last event when
// that event ends the run, else 0: a run the control plane ended has no
// count, and its logs end where the stream does.
func (d *Dispatcher) finalLogLines(ctx context.Context, runID string) int64 {
	if ev := d.lastTerminalEvent(ctx, runID); ev != nil {
		return ev.LogLines
	}
	return 0
}

// lastTerminalEvent returns the run's last event in RUN_EVENTS when it is
// the agent's final one (succeeded or failed), applied or not; nil
// otherwise.
func (d *Dispatcher) lastTerminalEvent(ctx context.Context, runID string) *runproto.Event {
	s, err := d.js.Stream(ctx, natsbus.StreamRunEvents)
	if err != nil {
		return nil
	}
	raw, err := s.GetLastMsgForSubject(ctx, natsbus.RunEvents(runID))
	if err != nil {
		return nil
	}
	var ev runproto.Event
	if json.Unmarshal(raw.Data, &ev) != nil || !computation.State(ev.State).Terminal() {
		return nil
	}
	return &ev
}

// unavailable wraps a JetStream or context error.
func unavailable(ctx context.Context, msg string, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = errors.Join(ctx.Err(), err)
	}
	return &cove.Error{Code: cove.Unavailable, Message: msg, Err: err}
}
