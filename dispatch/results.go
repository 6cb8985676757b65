package dispatch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
)

// uploadIdle is how long an open result upload waits for its next chunk
// before it is aborted.
const uploadIdle = time.Minute

// A result upload is a conversation: begin, chunks in order, commit. The
// queue subscription on AllRunResults hands each message to one replica,
// which would scatter an upload across replicas. So the replica that takes
// the begin owns the upload and subscribes, without a queue group, to that
// run's RunResults until the commit: it then receives every chunk and the
// commit, whatever the queue group does with them. The queue handler
// answers only begins, and commits that are retries of one already
// recorded in the run store.

// handleResults is the queue handler of RunResults.
func (d *Dispatcher) handleResults(m *nats.Msg) {
	runID, ok := d.runRequest(m)
	if !ok {
		return
	}
	ctx, cancel := d.handlerContext()
	defer cancel()
	switch m.Header.Get(runproto.HeaderOp) {
	case runproto.OpBegin:
		err := d.beginUpload(ctx, runID, m.Data)
		d.replyJSON(m, runproto.Reply{Error: runproto.ErrorOf(err)}, err)
	case runproto.OpCommit:
		// Answered here only when the result is recorded already: the agent
		// lost the owner's answer and asks again.
		var c runproto.ResultCommit
		if json.Unmarshal(m.Data, &c) != nil || c.SHA256 == "" {
			return
		}
		if run, err := d.cfg.Runs.FindRun(ctx, runID); err == nil && run.ResultSHA256 == c.SHA256 {
			d.replyJSON(m, runproto.Reply{}, nil)
		}
	}
}

// beginUpload opens the run's result upload on this replica.
func (d *Dispatcher) beginUpload(ctx context.Context, runID string, body []byte) error {
	var b runproto.ResultBegin
	if err := json.Unmarshal(body, &b); err != nil {
		return cove.Errorf(cove.Invalid, "the result begin is not valid JSON")
	}
	run, err := d.cfg.Runs.FindRun(ctx, runID)
	if err != nil {
		return err
	}
	if !takesResult(run.State) {
		return cove.Errorf(cove.Conflict, "run %s is %s: an attested run uploads its result before it ends", run.ID, run.State)
	}
	if run.ResultSHA256 != "" {
		return cove.Errorf(cove.Conflict, "run %s has its result already", run.ID)
	}
	man, err := d.manifestOf(ctx, run)
	if err != nil {
		return err
	}
	want := make([]string, 0, len(man.m.ResultConsumers))
	for _, c := range man.m.ResultConsumers {
		want = append(want, c.Recipient)
	}
	if len(want) == 0 {
		return cove.Errorf(cove.Forbidden, "the computation has no result consumers to seal a result to")
	}
	if !sameSet(want, b.Recipients) {
		return cove.Errorf(cove.Forbidden, "the result must be sealed to exactly the computation's result consumers")
	}

	pr, pw := io.Pipe()
	up := &upload{
		run:   runID,
		pw:    pw,
		check: &commitCheck{r: pr, h: sha256.New()},
		done:  make(chan struct{}),
	}
	up.idle = time.AfterFunc(uploadIdle, func() {
		d.endUpload(up, cove.Errorf(cove.Unavailable, "the result upload stalled"))
	})
	d.mu.Lock()
	var refused error
	switch l := d.runs[runID]; {
	case d.closed:
		refused = cove.Errorf(cove.Unavailable, "the control plane is shutting down")
	case l != nil && l.upload != nil:
		refused = cove.Errorf(cove.Conflict, "run %s has an upload open already", runID)
	default:
		d.localFor(runID).upload = up
	}
	d.mu.Unlock()
	if refused != nil {
		up.idle.Stop()
		return refused
	}

	sub, err := d.nc.Subscribe(natsbus.RunResults(runID), func(m *nats.Msg) { d.handleUpload(up, m) })
	if err == nil {
		up.setSub(sub)
		// The agent sends its first chunk when it has the answer, so the
		// server must know of the subscription before then.
		err = d.nc.FlushWithContext(ctx)
	}
	if err != nil {
		d.endUpload(up, cove.Errorf(cove.Unavailable, "cannot receive the result"))
		return &cove.Error{Code: cove.Unavailable, Message: "cannot receive the result", Err: err}
	}
	started := d.goSafe(func() {
		// The commit check makes Put fail, keeping nothing, unless the bytes
		// are exactly those the commit declares; the digest is not known
		// before, so it cannot be Put's want.
		up.info, up.err = d.cfg.Blobs.Put(d.ctx, up.check, "")
		// A Put that failed reads no further: writers must not wait for it.
		failed := up.err
		if failed == nil {
			failed = cove.Errorf(cove.Conflict, "the result upload is over")
		}
		pr.CloseWithError(failed)
		close(up.done)
	})
	if !started {
		err := cove.Errorf(cove.Unavailable, "the control plane is shutting down")
		d.endUpload(up, err)
		return err
	}
	return nil
}

// handleUpload takes the chunks and the commit of an upload this replica
// owns. Messages arrive in order, one at a time.
func (d *Dispatcher) handleUpload(up *upload, m *nats.Msg) {
	if !natsbus.InRunInbox(up.run, m.Reply) {
		return // runRequest of the queue handler logs it
	}
	switch m.Header.Get(runproto.HeaderOp) {
	case runproto.OpChunk:
		err := up.chunk(m)
		if err != nil {
			d.endUpload(up, err)
		}
		d.replyJSON(m, runproto.Reply{Error: runproto.ErrorOf(err)}, err)
	case runproto.OpCommit:
		err := d.commit(up, m.Data)
		d.replyJSON(m, runproto.Reply{Error: runproto.ErrorOf(err)}, err)
	}
}

// commit ends the upload: the result is stored and recorded on the run if
// the bytes hash to the declared digest and size, else nothing is kept.
func (d *Dispatcher) commit(up *upload, body []byte) error {
	var c runproto.ResultCommit
	if err := json.Unmarshal(body, &c); err != nil || !blob.ValidSHA256(c.SHA256) || c.Size < 0 {
		err := cove.Errorf(cove.Invalid, "the result commit needs a SHA-256 of 64 lowercase hex digits and a size")
		d.endUpload(up, err)
		return err
	}
	up.check.expect(c.SHA256, c.Size)
	up.pw.Close()
	<-up.done
	d.endUpload(up, nil)
	if up.err != nil {
		return up.err
	}
	ctx, cancel := d.handlerContext()
	defer cancel()
	return d.recordResult(ctx, up.run, up.info)
}

// takesResult reports whether a run in s may upload its result. The agent
// uploads after it has reported running and publishing, but its events
// travel through the stream and may not be applied yet, so every state
// after a passed attestation counts.
func takesResult(s computation.State) bool {
	return s == computation.Receiving || s == computation.Running || s == computation.Publishing
}

// recordResult sets the run's result without changing its state, which
// the agent's events may be moving on meanwhile.
func (d *Dispatcher) recordResult(ctx context.Context, runID string, info blob.Info) error {
	upd := computation.RunUpdate{ResultSHA256: info.SHA256, ResultSize: info.Size}
	var err error
	for range 3 {
		var run *computation.Run
		if run, err = d.cfg.Runs.FindRun(ctx, runID); err != nil {
			return err
		}
		if !takesResult(run.State) {
			return cove.Errorf(cove.Conflict, "run %s is %s: it can no longer take a result", run.ID, run.State)
		}
		if _, err = d.cfg.Runs.Advance(ctx, runID, run.State, upd); cove.ErrorCode(err) != cove.Conflict {
			return err
		}
	}
	return err
}

// endUpload closes an upload: with why set it is aborted and Put keeps
// nothing. It is safe to call more than once.
func (d *Dispatcher) endUpload(up *upload, why error) {
	d.mu.Lock()
	if l := d.runs[up.run]; l != nil && l.upload == up {
		l.upload = nil
	}
	d.mu.Unlock()
	up.abort(why)
}

// upload is a result upload this replica owns.
type upload struct {
	run   string
	pw    *io.PipeWriter
	check *commitCheck
	idle  *time.Timer
	seq   int64 // last chunk written; only the subscription's goroutine uses it

	done chan struct{} // closed when Put returned, with info and err set
	info blob.Info
	err  error

	mu      sync.Mutex
	sub     *nats.Subscription // this run's RunResults, without queue group
	aborted bool
}

// setSub records the upload's subscription, or drops it when the upload
// was aborted meanwhile.
func (up *upload) setSub(sub *nats.Subscription) {
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.aborted {
		sub.Unsubscribe()
		return
	}
	up.sub = sub
}

// chunk writes the next chunk into the pipe Put reads. It returns once Put
// has taken the bytes, so the agent's next chunk waits for the store.
func (up *upload) chunk(m *nats.Msg) error {
	seq, err := strconv.ParseInt(m.Header.Get(runproto.HeaderSeq), 10, 64)
	switch {
	case err != nil:
		return cove.Errorf(cove.Invalid, "the chunk has no sequence number")
	case seq == up.seq && seq > 0:
		return nil // the agent missed the answer and sent it again
	case seq != up.seq+1:
		return cove.Errorf(cove.Invalid, "chunk %d arrived where chunk %d was due", seq, up.seq+1)
	case len(m.Data) == 0 || len(m.Data) > runproto.ChunkSize:
		return cove.Errorf(cove.Invalid, "a result chunk holds 1 to %d bytes", runproto.ChunkSize)
	}
	up.idle.Reset(uploadIdle)
	if _, err := up.pw.Write(m.Data); err != nil {
		var ce *cove.Error
		if errors.As(err, &ce) {
			return err
		}
		return &cove.Error{Code: cove.Unavailable, Message: "the result could not be stored", Err: err}
	}
	up.seq = seq
	return nil
}

// abort ends the upload; with why set, Put fails and keeps nothing.
func (up *upload) abort(why error) {
	up.mu.Lock()
	if up.aborted {
		up.mu.Unlock()
		return
	}
	up.aborted = true
	sub := up.sub
	up.mu.Unlock()
	up.idle.Stop()
	if sub != nil {
		sub.Unsubscribe()
	}
	if why != nil {
		up.pw.CloseWithError(why)
	}
}

// commitCheck is what Put reads: the chunks, hashed on the way. At the end
// it fails with a mismatch, instead of io.EOF, unless the bytes are exactly
// those the commit declared, which makes Put discard them.
type commitCheck struct {
	r io.Reader
	h hash.Hash
	n int64

	mu       sync.Mutex
	want     string
	wantSize int64
	set      bool
}

func (c *commitCheck) expect(sum string, size int64) {
	c.mu.Lock()
	c.want, c.wantSize, c.set = sum, size, true
	c.mu.Unlock()
}

func (c *commitCheck) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if err != io.EOF {
		return n, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if got := hex.EncodeToString(c.h.Sum(nil)); !c.set || got != c.want || c.n != c.wantSize {
		return n, &cove.Error{
			Code:    cove.Invalid,
			Message: "the result does not match the SHA-256 and size its commit declares",
			Err:     fmt.Errorf("%w: got sha256 %s, %d bytes; want %s, %d bytes", blob.ErrMismatch, got, c.n, c.want, c.wantSize),
		}
	}
	return n, io.EOF
}

// sameSet reports whether a and b hold the same strings, ignoring order
// and repeats.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
