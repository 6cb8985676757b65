// Package dispatch is the control plane's side of the run protocol
// (package runproto) over NATS. It starts runs on nodes, hands agents their
// manifest, checks their attestation before it releases any input, serves
// the inputs, takes in sealed results, applies the state changes agents
// report, fails runs whose agent falls silent, reconciles nodes with the
// runs they should have, stores the log batches agents send and streams
// them to readers.
//
// docs/protocol.md walks through a run step by step; natsbus/README.md has
// the subjects and the permissions they rest on.
//
// Work is shared by several control-plane replicas: requests arrive on queue
// subscriptions, and everything that must outlive one request is either in
// the run store (the run's state, its result) or derived from it, so any
// replica can answer any request. Per-run memory (cached manifests, open
// input files, agent heartbeat timers, an open result upload) is only a
// cache or belongs to the replica doing the work.
package dispatch

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
)

// Runs is the run store as the dispatcher uses it.
type Runs interface {
	// FindRun returns the run with id. Errors: NotFound.
	FindRun(ctx context.Context, id string) (*computation.Run, error)
	// Advance moves the run to state to and records u. It is idempotent when
	// the run is in to already: it then applies u's non-zero fields.
	// Errors: NotFound; Conflict when the run is terminal or the state
	// machine forbids the move; Invalid when u's reason does not fit to.
	Advance(ctx context.Context, id string, to computation.State, u computation.RunUpdate) (*computation.Run, error)
	// Manifest returns the manifest pinned by the run: its canonical JSON,
	// the hex SHA-256 of that JSON, and the decoded form. Errors: NotFound.
	Manifest(ctx context.Context, runID string) (canonical []byte, sha256 string, m *computation.Manifest, err error)
	// FindActiveRuns returns every run in an active state.
	FindActiveRuns(ctx context.Context) ([]*computation.Run, error)
	// FindRunsOnNode returns the active runs placed on the node.
	FindRunsOnNode(ctx context.Context, nodeID string) ([]*computation.Run, error)
}

// Blobs is the blob store: *blob.FS and *blob.S3 satisfy it.
type Blobs interface {
	// Put stores r. With want set it stores nothing unless r hashes to
	// want. Errors: Invalid (wrapping blob.ErrMismatch on a mismatch),
	// Unavailable when ctx ends, Internal.
	Put(ctx context.Context, r io.Reader, want string) (blob.Info, error)
	// Open returns the content stored under sum. Errors: Invalid, NotFound.
	Open(ctx context.Context, sum string) (io.ReadCloser, blob.Info, error)
}

// Nodes is the node registry as the dispatcher uses it.
type Nodes interface {
	// Heartbeat records that a node is alive, with its capacity and
	// drivers. Errors: NotFound for an unknown node, Forbidden for one that
	// is not approved.
	Heartbeat(ctx context.Context, hb runproto.Heartbeat) error
}

// Releaser frees what the scheduler reserved for a run. The dispatcher
// calls it once it knows a run is over, and several replicas may call it
// for the same run, so it must be idempotent.
type Releaser interface {
	Release(ctx context.Context, runID string)
}

// Config is what a Dispatcher needs. Bus, Runs, Blobs, Nodes and Scheduler
// are required.
type Config struct {
	Bus       *natsbus.Bus
	Runs      Runs
	Blobs     Blobs
	Nodes     Nodes
	Scheduler Releaser
	// Log receives what goes wrong in handlers, where nobody else would see
	// it. Nil discards.
	Log *slog.Logger
	// RunCredentialTTL is how long an agent's NATS credential lasts.
	// Default: the run's maximum duration (24 h when it has none) plus 10
	// minutes for provisioning, inputs and results.
	RunCredentialTTL time.Duration
	// AgentLostAfter is how long an agent may stay silent before its run
	// fails with agent_lost. Default runproto.AgentLostAfter.
	AgentLostAfter time.Duration
	// NonceKey derives the attestation nonce of each run (HMAC-SHA256 of
	// the run ID and the manifest digest). Give every replica the same
	// secret of at least 32 bytes so that a nonce handed out by one replica
	// verifies on another and after a restart. Empty: a random key per
	// process, right for a single replica; an agent that fetched its
	// manifest just before a restart then fails attestation.
	NonceKey []byte
}

// Defaults and limits.
const (
	// credentialSlack is added to a run's maximum duration for the time
	// before and after the algorithm runs.
	credentialSlack = 10 * time.Minute
	// defaultMaxRun stands in for the maximum duration of a run that has
	// none, to bound its credential.
	defaultMaxRun = 24 * time.Hour
	// startTimeout and nodeTimeout bound how long a node may take to answer
	// a Start, and a Stop or Reconcile. A node answers once it has accepted
	// the command, not when the sandbox is up or gone.
	startTimeout = 15 * time.Second
	nodeTimeout  = 10 * time.Second
	// handlerTimeout bounds the store and blob calls one request makes.
	handlerTimeout = 30 * time.Second
	// maxHandlers bounds the requests handled at once; beyond it the
	// subscriptions wait, and NATS buffers.
	maxHandlers = 64
	// queueGroup shares requests among control-plane replicas.
	queueGroup = "cove-dispatch"
	// minNonceKey is the shortest NonceKey accepted.
	minNonceKey = 32
)

// Dispatcher is the control plane's end of the run protocol. Create it with
// New, then Start it; it is safe for concurrent use.
type Dispatcher struct {
	cfg      Config
	log      *slog.Logger
	nc       *nats.Conn
	js       jetstream.JetStream
	nonceKey []byte

	ctx    context.Context // ends at Close; every handler works under it
	cancel context.CancelFunc
	wg     sync.WaitGroup // handler and helper goroutines
	sem    chan struct{}  // bounds concurrent handlers
	logSem chan struct{}  // bounds concurrent log batch stores

	mu          sync.Mutex
	started     bool
	closing     bool // Close began: no new subscriptions
	closed      bool // no new work
	subs        []*nats.Subscription
	consume     jetstream.ConsumeContext
	runs        map[string]*local     // per-run memory of this replica
	ends        map[string]*endWaiter // log followers waiting for a run's end
	reconciling map[string]bool       // nodes with a Reconcile in flight
}

// local is what this replica keeps about one run. Everything in it can be
// rebuilt from the run store or belongs to a conversation with this replica.
type local struct {
	man      *manifest
	lost     *time.Timer // fails the run when the agent falls silent
	lastBeat time.Time   // when lost was last armed
	upload   *upload
	inputs   map[string]*input // open input blobs by digest
}

// New returns a Dispatcher for cfg. It does nothing until Start.
func New(cfg Config) *Dispatcher {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.AgentLostAfter <= 0 {
		cfg.AgentLostAfter = runproto.AgentLostAfter
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{
		cfg:         cfg,
		log:         cfg.Log.With("component", "dispatch"),
		ctx:         ctx,
		cancel:      cancel,
		sem:         make(chan struct{}, maxHandlers),
		logSem:      make(chan struct{}, logWorkers),
		runs:        map[string]*local{},
		ends:        map[string]*endWaiter{},
		reconciling: map[string]bool{},
	}
	if cfg.Bus != nil {
		d.nc = cfg.Bus.Conn()
		d.js = cfg.Bus.JetStream()
	}
	d.nonceKey = cfg.NonceKey
	if len(d.nonceKey) == 0 {
		d.nonceKey = make([]byte, minNonceKey)
		rand.Read(d.nonceKey) // never fails (crypto/rand)
	}
	return d
}

// Start subscribes to the protocol's subjects, creates (or resumes) the
// durable consumer of run events, and re-arms the agent-lost timer of every
// run that has an agent. Errors: Invalid for an incomplete Config or a
// second Start, Unavailable when NATS or the store does not answer. After a
// failed Start, Close drops what it set up.
func (d *Dispatcher) Start(ctx context.Context) error {
	if err := d.checkConfig(); err != nil {
		return err
	}
	d.mu.Lock()
	if d.started || d.closing {
		d.mu.Unlock()
		return cove.Errorf(cove.Invalid, "a dispatcher starts once")
	}
	d.started = true
	d.mu.Unlock()

	type sub struct {
		subject string
		queue   bool
		handle  func(*nats.Msg)
		// pendingMsgs and pendingBytes, when set, replace the client's
		// limits of what may wait in the subscription.
		pendingMsgs, pendingBytes int
	}
	for _, s := range []sub{
		{natsbus.AllRunManifests, true, d.async(d.handleManifest), 0, 0},
		{natsbus.AllRunInputs, true, d.async(d.handleInputs), 0, 0},
		{natsbus.AllRunResults, true, d.async(d.handleResults), 0, 0},
		{natsbus.AllRunLogs, true, d.asyncOn(d.logSem, d.handleLogs), logPendingMsgs, logPendingBytes},
		{natsbus.AllNodeHeartbeats, true, d.handleNodeHeartbeat, 0, 0},
		// Every replica sees every agent heartbeat: a replica that saw only
		// its share would think agents lost.
		{natsbus.AllRunHeartbeats, false, d.handleRunHeartbeat, 0, 0},
	} {
		var ns *nats.Subscription
		var err error
		if s.queue {
			ns, err = d.nc.QueueSubscribe(s.subject, queueGroup, s.handle)
		} else {
			ns, err = d.nc.Subscribe(s.subject, s.handle)
		}
		if err == nil && s.pendingMsgs > 0 {
			err = ns.SetPendingLimits(s.pendingMsgs, s.pendingBytes)
		}
		if err != nil {
			if ns != nil {
				ns.Unsubscribe()
			}
			return &cove.Error{Code: cove.Unavailable, Message: "cannot subscribe to " + s.subject, Err: err}
		}
		d.mu.Lock()
		d.subs = append(d.subs, ns)
		d.mu.Unlock()
	}
	// FlushWithContext refuses a context without a deadline; give it one.
	flushCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.nc.FlushWithContext(flushCtx); err != nil {
		return &cove.Error{Code: cove.Unavailable, Message: "NATS did not confirm the subscriptions", Err: err}
	}
	if err := d.startEvents(ctx); err != nil {
		return err
	}
	return d.rearm(ctx)
}

func (d *Dispatcher) checkConfig() error {
	switch {
	case d.cfg.Bus == nil:
		return cove.Errorf(cove.Invalid, "dispatch needs a NATS bus")
	case d.cfg.Runs == nil:
		return cove.Errorf(cove.Invalid, "dispatch needs the run store")
	case d.cfg.Blobs == nil:
		return cove.Errorf(cove.Invalid, "dispatch needs the blob store")
	case d.cfg.Nodes == nil:
		return cove.Errorf(cove.Invalid, "dispatch needs the node registry")
	case d.cfg.Scheduler == nil:
		return cove.Errorf(cove.Invalid, "dispatch needs the scheduler")
	case len(d.cfg.NonceKey) > 0 && len(d.cfg.NonceKey) < minNonceKey:
		return cove.Errorf(cove.Invalid, "the attestation nonce key must have at least %d bytes", minNonceKey)
	}
	return nil
}

// Close stops taking requests and events, aborts open result uploads
// (nothing of them is kept), closes open inputs, stops the timers and waits
// for handlers to return. The durable event consumer stays on the server,
// so events published meanwhile are applied at the next Start. Close does
// not close the Bus.
func (d *Dispatcher) Close() error {
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		return nil
	}
	d.closing = true
	subs, cc := d.subs, d.consume
	d.subs, d.consume = nil, nil
	d.mu.Unlock()

	for _, s := range subs {
		s.Unsubscribe()
	}
	if cc != nil {
		// Drain applies the event the client holds already: one it dropped
		// would stay unacknowledged, and hold up all events, until AckWait.
		cc.Drain()
		select {
		case <-cc.Closed():
		case <-time.After(handlerTimeout):
			cc.Stop()
		}
	}
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()

	d.mu.Lock()
	runs := d.runs
	d.runs = map[string]*local{}
	d.mu.Unlock()
	for _, l := range runs {
		l.release(cove.Errorf(cove.Unavailable, "the control plane is shutting down"))
	}
	d.wg.Wait()
	return nil
}

// async runs h in its own goroutine, at most maxHandlers at once, so one
// slow request does not hold up the others on its subscription.
func (d *Dispatcher) async(h func(*nats.Msg)) func(*nats.Msg) { return d.asyncOn(d.sem, h) }

// asyncOn is async with at most cap(sem) handlers at once. While all are
// busy the subscription waits, and its messages wait in the client.
func (d *Dispatcher) asyncOn(sem chan struct{}, h func(*nats.Msg)) func(*nats.Msg) {
	return func(m *nats.Msg) {
		select {
		case sem <- struct{}{}:
		case <-d.ctx.Done():
			return
		}
		if !d.goSafe(func() { defer func() { <-sem }(); h(m) }) {
			<-sem
		}
	}
}

// goSafe runs f in a goroutine that Close waits for, unless the
// dispatcher is closed; it reports whether f runs.
func (d *Dispatcher) goSafe(f func()) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f()
	}()
	return true
}

// enter counts a handler that runs on a NATS goroutine, so Close waits for
// it; it reports false once the dispatcher is closed. The caller calls
// d.wg.Done when entered.
func (d *Dispatcher) enter() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.wg.Add(1)
	return true
}

// localFor returns this replica's memory of run, creating it. d.mu is held.
func (d *Dispatcher) localFor(run string) *local {
	l := d.runs[run]
	if l == nil {
		l = &local{}
		d.runs[run] = l
	}
	return l
}

// forget drops this replica's memory of run: the timer, an open upload
// (aborted: nothing of it is kept) and open inputs.
func (d *Dispatcher) forget(run string, why error) {
	d.mu.Lock()
	l := d.runs[run]
	delete(d.runs, run)
	d.mu.Unlock()
	if l != nil {
		l.release(why)
	}
}

func (l *local) release(why error) {
	if l.lost != nil {
		l.lost.Stop()
	}
	if l.upload != nil {
		l.upload.abort(why)
	}
	for _, in := range l.inputs {
		in.close()
	}
}

// replyJSON answers a request with v; when err is set it also carries the
// error in the headers, as runproto asks of every failed reply. The caller
// has checked the reply subject.
func (d *Dispatcher) replyJSON(m *nats.Msg, v any, err error) {
	data, merr := json.Marshal(v)
	if merr != nil {
		d.log.Error("cannot encode a reply", "subject", m.Subject, "err", merr)
		return
	}
	d.reply(m, data, err)
}

// reply answers a request with a raw body, or with the error in the
// headers.
func (d *Dispatcher) reply(m *nats.Msg, body []byte, err error) {
	out := nats.NewMsg(m.Reply)
	out.Data = body
	if err != nil {
		out.Header.Set(runproto.HeaderErrorCode, string(cove.ErrorCode(err)))
		out.Header.Set(runproto.HeaderErrorMessage, cove.ErrorMessage(err))
		if cove.ErrorCode(err) == cove.Internal {
			d.log.Error("request failed", "subject", m.Subject, "err", err)
		} else {
			d.log.Debug("request refused", "subject", m.Subject, "err", err)
		}
	}
	if perr := d.nc.PublishMsg(out); perr != nil {
		d.log.Warn("cannot answer a request", "subject", m.Subject, "err", perr)
	}
}

// runRequest returns the run a request on a cove.run.<run>.<verb> subject
// comes from, or false when the request must be dropped: its reply subject
// is not in that run's inbox, so answering would write into somebody
// else's.
func (d *Dispatcher) runRequest(m *nats.Msg) (string, bool) {
	run, ok := natsbus.RunFromSubject(m.Subject)
	if !ok || !natsbus.InRunInbox(run, m.Reply) {
		d.log.Warn("dropping a run request whose reply subject is not the run's inbox", "subject", m.Subject, "reply", m.Reply)
		return "", false
	}
	return run, true
}

// handlerContext bounds the work of one request.
func (d *Dispatcher) handlerContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(d.ctx, handlerTimeout)
}

// The blob stores satisfy Blobs as they are.
var (
	_ Blobs = (*blob.FS)(nil)
	_ Blobs = (*blob.S3)(nil)
)
