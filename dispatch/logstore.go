package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
)

// How log batches are taken in. An agent sends each batch as a request on
// RunLogs and keeps a bounded window of them unanswered; the control plane
// stores the batch under RunLogStore, acknowledged by JetStream, and only
// then answers. A request it cannot take is not answered (or answered
// unavailable), and the agent sends the batch again: flow control end to end,
// where a stream capturing RunLogs would drop what its ingest queue cannot
// hold without telling anyone.
const (
	// logWorkers bounds the batches stored at once, apart from maxHandlers
	// so that a burst of logs does not hold up manifests and inputs. Beyond
	// it requests wait in the subscription.
	logWorkers = 32
	// logPendingMsgs and logPendingBytes bound the requests waiting in the
	// subscription. The NATS client drops what overflows (a slow consumer);
	// the agent's request then times out and it sends the batch again.
	logPendingMsgs  = 64 << 10
	logPendingBytes = 256 << 20
	// logStoreTimeout bounds the store lookup and the stream write of one
	// batch: well under the agent's request timeout, so that an error answer
	// reaches the agent before it gives up on the request.
	logStoreTimeout = 5 * time.Second
	// maxLogBatchLines and maxLogBatchBytes bound a batch. Agents send at
	// most 256 lines and 768 KiB.
	maxLogBatchLines = 4096
	maxLogBatchBytes = 1 << 20
)

// handleLogs stores a log batch an agent sent on RunLogs and answers a
// runproto.Reply. A request whose reply subject is not in the run's inbox is
// dropped unanswered and stores nothing.
func (d *Dispatcher) handleLogs(m *nats.Msg) {
	run, ok := d.runRequest(m)
	if !ok {
		return
	}
	err := d.storeLogs(run, m.Data)
	if cove.ErrorCode(err) == cove.Unavailable {
		d.log.Warn("cannot store a log batch; the agent will send it again", "run", run, "err", err)
	}
	d.replyJSON(m, runproto.Reply{Error: runproto.ErrorOf(err)}, err)
}

// storeLogs stores one batch of run. Errors: Invalid for a malformed batch,
// NotFound for an unknown run, Conflict when the run has ended (its agent
// sends its last event only once every batch is stored, so a later batch is
// not the agent's to send), Unavailable when the store or JetStream fails:
// the agent sends the batch again, and the message ID keeps JetStream from
// storing it twice within the stream's duplicate window.
func (d *Dispatcher) storeLogs(run string, data []byte) error {
	first, err := checkLogBatch(data)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(d.ctx, logStoreTimeout)
	defer cancel()
	r, err := d.cfg.Runs.FindRun(ctx, run)
	switch {
	case cove.ErrorCode(err) == cove.NotFound:
		return err
	case err != nil:
		return &cove.Error{Code: cove.Unavailable, Message: "cannot look up the run", Err: err}
	case r.State.Terminal():
		return cove.Errorf(cove.Conflict, "the run has ended (%s): its logs are closed", r.State)
	}
	id := run + "-" + strconv.FormatInt(first, 10)
	if _, err := d.js.Publish(ctx, natsbus.RunLogStore(run), data, jetstream.WithMsgID(id)); err != nil {
		return unavailable(ctx, "cannot store the run's logs", err)
	}
	return nil
}

// checkLogBatch checks that data is a runproto.LogBatch of 1 to
// maxLogBatchLines lines numbered one after the other from 1 or above, each
// of stdout or stderr, and returns the number of its first line.
func checkLogBatch(data []byte) (int64, error) {
	if len(data) > maxLogBatchBytes {
		return 0, cove.Errorf(cove.Invalid, "a log batch may hold at most %d bytes", maxLogBatchBytes)
	}
	var b checkedBatch
	if err := json.Unmarshal(data, &b); err != nil {
		return 0, &cove.Error{Code: cove.Invalid, Message: "the log batch is not valid JSON of a runproto.LogBatch", Err: err}
	}
	if len(b.Lines) == 0 || len(b.Lines) > maxLogBatchLines {
		return 0, cove.Errorf(cove.Invalid, "a log batch holds 1 to %d lines, not %d", maxLogBatchLines, len(b.Lines))
	}
	first := b.Lines[0].Seq
	if first < 1 {
		return 0, cove.Errorf(cove.Invalid, "log lines are numbered from 1")
	}
	for i, l := range b.Lines {
		if l.Seq != first+int64(i) {
			return 0, cove.Errorf(cove.Invalid, "the lines of a log batch are numbered one after the other")
		}
		if l.Stream != "stdout" && l.Stream != "stderr" {
			return 0, cove.Errorf(cove.Invalid, "a log line's stream is stdout or stderr")
		}
	}
	return first, nil
}

// checkedBatch is a runproto.LogBatch as checkLogBatch decodes it: every
// field the readers decode is checked to decode, but the text of a line,
// most of a batch's bytes, is only checked to be a JSON string, which is
// all decoding it into a string needs. Copying and unescaping it was the
// larger part of storing a batch.
type checkedBatch struct {
	Lines []struct {
		Seq    int64      `json:"seq"`
		Time   time.Time  `json:"time"`
		Stream string     `json:"stream"`
		Text   jsonString `json:"text"`
	} `json:"lines"`
}

// jsonString accepts a JSON string and nothing else, without decoding it.
type jsonString struct{}

func (jsonString) UnmarshalJSON(b []byte) error {
	// Unmarshal has checked b is one valid JSON value; null leaves a
	// string field empty, as it does for runproto.LogLine.
	if len(b) == 0 || (b[0] != '"' && string(b) != "null") {
		return errNotString
	}
	return nil
}

var errNotString = errors.New("a log line's text is not a string")
