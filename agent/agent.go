// Package agent runs one computation run inside its sandbox host: it is
// the run side of the protocol in package runproto.
//
// The agent starts with three things only, as a confidential VM would get
// them on its kernel command line: the NATS URL, a NATS credential allowed
// nothing but the run's own subjects, and the run ID. Everything else it
// asks the control plane for, and checks:
//
//  1. attesting: it fetches the manifest, checks that the bytes hash to the
//     digest the control plane announced, makes an ephemeral X25519 key and
//     evidence whose report data is SHA-512(manifest digest || public key ||
//     nonce), and sends it (OpAttest on RunInputs). Nothing is released to
//     an agent whose evidence the control plane refuses.
//  2. receiving: it fetches the algorithm and every dataset in chunks
//     (OpChunk, several requests in flight), streaming them through a
//     SHA-256 check against the manifest into its work directory. A single
//     wrong byte fails the run with hash_mismatch before the algorithm
//     starts.
//  3. running: it runs the algorithm with the driver that serves its kind,
//     streaming stdout and stderr as numbered log lines in batches, each a
//     request the control plane answers once it has stored it, a window of
//     them in flight; a batch without an answer is sent again.
//  4. publishing: it archives /cove/outputs, encrypts the archive with age to
//     every result consumer of the manifest as it is written, and uploads
//     the ciphertext in chunks (OpBegin, OpChunk, OpCommit on RunResults).
//     Plain outputs never leave the work directory.
//  5. succeeded or failed, with a closed-list reason, CPU time, peak memory
//     and the number of log lines stored, sent once every batch is
//     acknowledged.
//
// Throughout it heartbeats on RunHeartbeat. A stop (a Command with Stop on
// RunControl, or the context ending) cancels whatever is in progress; the
// agent then reports nothing more, since the control plane records the
// stop itself. The work directory is removed when Run returns, whatever
// happened.
package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sandbox"
)

// Timeouts of requests to the control plane.
const (
	// requestTimeout bounds a request for the manifest, an attestation, a
	// result begin or chunk, and the silence between two input chunks. It
	// is longer than the 30 s the control plane gives one request's store
	// and blob calls, so its error answer arrives before the agent gives up.
	requestTimeout = 40 * time.Second
	// commitTimeout bounds the commit of a result, which the control plane
	// answers only once it has checked and stored every chunk.
	commitTimeout = 2 * time.Minute
	// finalFlushTimeout bounds how long the last event and logs may take to
	// reach the server before the connection closes.
	finalFlushTimeout = 10 * time.Second
)

// Config is what a node hands the agent of one run.
type Config struct {
	// NATSURL, Creds and RunID are the three things the agent gets from the
	// control plane through the node: where NATS is, the run's credential
	// (creds file content: user JWT and nkey seed), and the run ID.
	NATSURL string
	Creds   []byte
	RunID   string
	// Drivers are the sandbox drivers the agent may use, by name ("wasm",
	// "process"). The algorithm's kind picks one: wasm runs on "wasm",
	// bin and python on "process".
	Drivers map[string]sandbox.Driver
	// WorkDir is where the run's files go: the algorithm, the inputs and
	// the outputs. It must not exist or be empty; Run removes it before it
	// returns. When the process driver runs as root, WorkDir's parents must
	// be searchable by the sandbox user (mode o+x).
	WorkDir string
	// Log receives the agent's own log (never the algorithm's output, which
	// goes to the run's logs). Nil discards it.
	Log *slog.Logger
	// Cache, when set, keeps the inputs the agent received, by digest, for
	// the next runs on the same host: an input whose manifest digest is
	// cached is read from the cache, still verified on the way into the
	// work directory, and not fetched again. Nil fetches every input.
	Cache *blob.Cache
}

// Outcome is how a run ended, as far as the agent knows.
type Outcome struct {
	// State is succeeded, failed or stopped.
	State computation.State
	// Reason says why a run failed; empty otherwise.
	Reason computation.Reason
	// Message is a user-safe sentence on a failure.
	Message string
	// ExitCode is the algorithm's exit code when it ran to its own exit.
	ExitCode *int
}

// Run runs the computation run cfg.RunID to its end and reports every step
// to the control plane. A failure of the run itself (a hash mismatch, the
// algorithm failing, the control plane refusing the attestation) is an
// Outcome with State failed, reported to the control plane, and a nil error.
// Run returns an error when it could not report: the configuration is
// invalid (Invalid), NATS cannot be reached or the connection was lost
// (Unavailable). A stop is State stopped with a nil error.
func Run(ctx context.Context, cfg Config) (Outcome, error) {
	if err := cfg.check(); err != nil {
		return Outcome{State: computation.Failed, Reason: computation.Internal, Message: cove.ErrorMessage(err)}, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("run", cfg.RunID)

	ws, err := newWorkspace(cfg.WorkDir)
	if err != nil {
		return Outcome{State: computation.Failed, Reason: computation.Internal, Message: cove.ErrorMessage(err)}, err
	}
	defer func() {
		if err := ws.remove(); err != nil {
			log.Error("cannot remove the work directory", "dir", cfg.WorkDir, "err", err)
		}
	}()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	nc, err := connect(cfg, log, cancel)
	if err != nil {
		return Outcome{State: computation.Failed, Reason: computation.Internal, Message: cove.ErrorMessage(err)}, err
	}
	defer nc.Close()

	r := &run{id: cfg.RunID, cfg: cfg, log: log, nc: nc, ws: ws}
	ctl, err := nc.Subscribe(natsbus.RunControl(cfg.RunID), func(msg *nats.Msg) { r.control(msg, cancel) })
	if err != nil {
		return Outcome{State: computation.Failed, Reason: computation.Internal, Message: "cannot listen for control requests"},
			&cove.Error{Code: cove.Unavailable, Message: "cannot listen for control requests", Err: err}
	}
	defer ctl.Unsubscribe()
	// finish closes the sink, after it has waited for the last batches.
	if r.logs, err = newLogSink(ctx, nc, natsbus.RunLogs(cfg.RunID), log); err != nil {
		return Outcome{State: computation.Failed, Reason: computation.Internal, Message: cove.ErrorMessage(err)}, err
	}

	var wg sync.WaitGroup
	hbCtx, stopHeartbeat := context.WithCancel(context.Background())
	wg.Go(func() { r.heartbeat(hbCtx) })
	defer func() { stopHeartbeat(); wg.Wait() }()

	u, err := r.execute(ctx)
	return r.finish(ctx, u, err)
}

// check rejects a Config the agent cannot start from.
func (c Config) check() error {
	switch {
	case !validRunID(c.RunID):
		return cove.Errorf(cove.Invalid, "the run ID %q is not a valid ID", c.RunID)
	case c.NATSURL == "":
		return cove.Errorf(cove.Invalid, "the NATS URL is required")
	case len(c.Creds) == 0:
		return cove.Errorf(cove.Invalid, "the run's NATS credential is required")
	case c.WorkDir == "":
		return cove.Errorf(cove.Invalid, "the work directory is required")
	case len(c.Drivers) == 0:
		return cove.Errorf(cove.Invalid, "at least one sandbox driver is required")
	}
	return nil
}

// validRunID accepts what cove.NewID makes and nothing that could change a
// subject's or a path's shape.
func validRunID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	return !strings.ContainsFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	})
}

// Causes of the run context's end that the agent makes itself.
var (
	errStopped        = errors.New("stopped by the control plane")
	errConnectionLost = errors.New("the NATS connection closed")
	errDenied         = errors.New("NATS refused a subject of the run")
)

// run is one run in progress.
type run struct {
	id   string
	cfg  Config
	log  *slog.Logger
	nc   *nats.Conn
	ws   *workspace
	logs *logSink

	mu    sync.Mutex
	seq   int64  // of the last event published
	state string // last state published, for heartbeats
}

// usage is what the sandbox measured, reported on the last event.
type usage struct {
	cpu  time.Duration
	peak int64
}

// failure fails a run with a closed-list reason and a user-safe message.
// Err is the internal detail, logged and never sent.
type failure struct {
	reason   computation.Reason
	message  string
	exitCode *int
	err      error
}

func (f *failure) Error() string {
	if f.err != nil {
		return string(f.reason) + ": " + f.message + ": " + f.err.Error()
	}
	return string(f.reason) + ": " + f.message
}

func (f *failure) Unwrap() error { return f.err }

func fail(reason computation.Reason, err error, message string) *failure {
	return &failure{reason: reason, message: message, err: err}
}

// execute walks the run through its states. It returns the usage of the
// sandbox, once it ran, and why the run did not succeed, if it did not.
func (r *run) execute(ctx context.Context) (usage, error) {
	if err := r.event(runproto.Event{State: string(computation.Attesting)}); err != nil {
		return usage{}, err
	}
	m, err := r.attest(ctx)
	if err != nil {
		return usage{}, err
	}
	if err := r.event(runproto.Event{State: string(computation.Receiving)}); err != nil {
		return usage{}, err
	}
	if err := r.receive(ctx, m); err != nil {
		return usage{}, err
	}
	if err := r.event(runproto.Event{State: string(computation.Running)}); err != nil {
		return usage{}, err
	}
	res, err := r.runAlgorithm(ctx, m)
	u := usage{cpu: res.CPUTime, peak: res.PeakMemory}
	if err != nil {
		return u, err
	}
	if err := r.event(runproto.Event{State: string(computation.Publishing)}); err != nil {
		return u, err
	}
	return u, r.publish(ctx, m)
}

// finish reports how the run ended, unless it was stopped, and turns it
// into an Outcome.
func (r *run) finish(ctx context.Context, u usage, err error) (Outcome, error) {
	// Whatever the algorithm printed is stored, acknowledged batch by
	// batch, before the last event, so the count on it is final. A stop
	// abandons what is not stored yet.
	lines := r.logs.close()

	if ctx.Err() != nil {
		cause := context.Cause(ctx)
		if errors.Is(cause, errDenied) {
			r.log.Error("run abandoned: the credential does not allow the run's subjects", "err", cause)
			return Outcome{State: computation.Failed, Reason: computation.Internal, Message: "the agent's credential is not valid for its run"},
				&cove.Error{Code: cove.Forbidden, Message: "the agent's credential is not valid for its run", Err: cause}
		}
		if errors.Is(cause, errConnectionLost) {
			r.log.Warn("run abandoned: the connection to NATS is lost", "err", err)
			return Outcome{State: computation.Failed, Reason: computation.Internal, Message: "the agent lost its connection to the control plane"},
				&cove.Error{Code: cove.Unavailable, Message: "the agent lost its connection to the control plane", Err: cause}
		}
		// The control plane or the node stopped the run; the control plane
		// records that itself, so the agent goes quietly.
		r.log.Info("run stopped", "cause", cause)
		r.flush()
		return Outcome{State: computation.Stopped}, nil
	}

	ev := runproto.Event{CPUTime: u.cpu.Seconds(), PeakMemory: u.peak, LogLines: lines}
	var out Outcome
	if err == nil {
		// Success means the algorithm exited by itself with status 0.
		zero := 0
		ev.State, ev.ExitCode = string(computation.Succeeded), &zero
		out = Outcome{State: computation.Succeeded, ExitCode: &zero}
	} else {
		var f *failure
		if !errors.As(err, &f) {
			f = fail(computation.Internal, err, cove.ErrorMessage(err))
		}
		level := slog.LevelInfo
		if f.reason == computation.Internal {
			level = slog.LevelError
		}
		r.log.Log(context.Background(), level, "run failed", "reason", f.reason, "message", f.message, "err", f.err)
		ev.State, ev.Reason, ev.Message, ev.ExitCode = string(computation.Failed), string(f.reason), f.message, f.exitCode
		out = Outcome{State: computation.Failed, Reason: f.reason, Message: f.message, ExitCode: f.exitCode}
	}
	if perr := r.event(ev); perr != nil {
		return out, perr
	}
	if !r.flush() {
		return out, cove.Errorf(cove.Unavailable, "the run's last event could not be delivered")
	}
	return out, nil
}

// flush makes sure everything published so far has reached the server.
func (r *run) flush() bool {
	if err := r.nc.FlushTimeout(finalFlushTimeout); err != nil {
		r.log.Warn("cannot flush to NATS", "err", err)
		return false
	}
	return true
}

// control answers the control plane's requests on RunControl. Stop is the
// only one so far.
func (r *run) control(msg *nats.Msg, cancel context.CancelCauseFunc) {
	var cmd runproto.Command
	var reply runproto.Reply
	switch err := unmarshal(msg.Data, &cmd); {
	case err != nil:
		reply.Error = runproto.ErrorOf(err)
	case cmd.Stop != nil && (cmd.Stop.RunID == "" || cmd.Stop.RunID == r.id):
		r.log.Info("stop requested", "reason", cmd.Stop.Reason)
		defer cancel(errStopped)
	default:
		reply.Error = runproto.ErrorOf(cove.Errorf(cove.Invalid, "the agent understands only a stop of its own run"))
	}
	if msg.Reply != "" {
		respondJSON(msg, reply, r.log)
	}
}

// event publishes the next event of the run. Events go with a plain publish:
// the stream RUN_EVENTS sends no acknowledgement to agents (see natsbus).
func (r *run) event(ev runproto.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	ev.Seq = r.seq
	ev.Time = time.Now().UTC()
	r.state = ev.State
	if err := publishJSON(r.nc, natsbus.RunEvents(r.id), ev); err != nil {
		return err
	}
	r.log.Debug("event", "seq", ev.Seq, "state", ev.State, "reason", ev.Reason)
	return nil
}

// heartbeatMessage is the body of an agent heartbeat. runproto defines no
// type for it: the subject names the run and the arrival is what counts;
// the state helps whoever reads it.
type heartbeatMessage struct {
	RunID string    `json:"run_id"`
	Time  time.Time `json:"time"`
	State string    `json:"state,omitempty"`
}

// heartbeat tells the control plane the agent is alive until ctx ends.
func (r *run) heartbeat(ctx context.Context) {
	t := time.NewTicker(runproto.AgentHeartbeatInterval)
	defer t.Stop()
	for {
		r.mu.Lock()
		hb := heartbeatMessage{RunID: r.id, Time: time.Now().UTC(), State: r.state}
		r.mu.Unlock()
		if err := publishJSON(r.nc, natsbus.RunHeartbeat(r.id), hb); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			r.log.Warn("cannot publish a heartbeat", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// workspace is the run's work directory:
//
//	algorithm/<file name>            the algorithm
//	inputs/<dataset>/...             each dataset, as the sandbox sees it
//	outputs/                         what the algorithm leaves
type workspace struct {
	dir, algorithm, inputs, outputs string
}

// newWorkspace creates dir with its subdirectories. Directories that the
// sandbox user of the process driver must cross are 0711: searchable,
// not listable, so another local user cannot find a run's files.
func newWorkspace(dir string) (*workspace, error) {
	if err := os.Mkdir(dir, 0o711); err != nil {
		if !errors.Is(err, os.ErrExist) {
			return nil, cove.Wrap(err, "cannot create the work directory")
		}
		entries, rerr := os.ReadDir(dir)
		if rerr != nil || len(entries) > 0 {
			return nil, cove.Errorf(cove.Invalid, "the work directory %s exists and is not empty", dir)
		}
		if err := os.Chmod(dir, 0o711); err != nil {
			return nil, cove.Wrap(err, "cannot set up the work directory")
		}
	}
	ws := &workspace{
		dir:       dir,
		algorithm: dir + string(os.PathSeparator) + "algorithm",
		inputs:    dir + string(os.PathSeparator) + "inputs",
		outputs:   dir + string(os.PathSeparator) + "outputs",
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{ws.algorithm, 0o700}, {ws.inputs, 0o711}, {ws.outputs, 0o700}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			_ = os.RemoveAll(dir)
			return nil, cove.Wrap(err, "cannot set up the work directory")
		}
	}
	return ws, nil
}

// remove deletes the work directory and everything in it. Read-only
// directories left by an extraction are made writable first.
func (ws *workspace) remove() error {
	err := os.RemoveAll(ws.dir)
	if err != nil {
		_ = makeWritable(ws.dir)
		err = os.RemoveAll(ws.dir)
	}
	return err
}
