// Package computenode is the compute node daemon, `cove node run`: it
// enrolls with the control plane once, then connects to NATS with its node
// credential, heartbeats its capacity and drivers, and runs one agent per
// run the control plane starts on it (package agent), each named by its run
// ID and in its own work directory.
//
// The node obeys three commands on NodeControl: Start (run an agent with
// the run's credential), Stop (cancel that run), and Reconcile (cancel
// every run the control plane does not list as active). It keeps no state
// about runs across restarts: agents run inside the node's process (the
// wasm driver) or as children that die with it (the process driver starts
// bubblewrap with --die-with-parent), so a node that restarts has no
// sandboxes, wipes the work directories left behind, and the control plane
// fails the runs it had with node_lost or agent_lost.
//
// Start also serves `cove serve --dev`, which embeds a node, and tests,
// which run many in one process.
package computenode

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/agent"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sandbox"
)

// DefaultDataDir is where a node keeps its identity and work directories
// when Config.DataDir is empty.
const DefaultDataDir = "cove-node"

// closeTimeout bounds how long Close waits for drivers to let go.
const closeTimeout = 30 * time.Second

// Config configures a node.
type Config struct {
	// ServerURL is the control plane's base URL (http://host:port), used to
	// enroll. Not needed once DataDir holds an enrollment.
	ServerURL string
	// Token is a one-time enrollment token from an administrator. Not
	// needed once DataDir holds an enrollment.
	Token string
	// CAFile (PEM) and CAFingerprint say how to trust the control plane's
	// HTTPS certificate before the node holds Cove's CA chain, which
	// enrollment hands it; see package tlstrust. Empty: the system's roots.
	CAFile, CAFingerprint string
	// Name is how the node shows in the registry. Default: the host name.
	Name string
	// DataDir holds node.json (the node's identity and NATS credential,
	// mode 0600), the wasm compilation cache and the runs' work
	// directories. Default DefaultDataDir.
	DataDir string
	// RunsDir holds the runs' work directories; it is emptied at start.
	// The process driver's sandbox user must be able to traverse every
	// directory above it. Default DataDir/runs.
	RunsDir string
	// Labels let computations ask for this node (region=eu, gpu=none).
	Labels map[string]string
	// Capacity is what the node offers. Zero fields take the host's: every
	// CPU, the total memory, the free disk under DataDir.
	Capacity runproto.Resources
	// Drivers are the sandbox drivers by name. Nil makes the node open its
	// own: wasm always, process where bubblewrap works; the node closes
	// those at Close. Drivers given here are the caller's to close, after
	// the node's Close.
	Drivers map[string]sandbox.Driver
	// InputCacheBytes bounds the input cache in DataDir/cache: algorithms
	// and datasets the node received, kept by SHA-256 digest so that the
	// next runs over them do not fetch them again (each is still verified
	// on its way into a run's work directory). Zero means
	// DefaultInputCacheBytes; negative turns the cache off.
	InputCacheBytes int64
	// Log receives the node's log. Nil discards it.
	Log *slog.Logger
}

// DefaultInputCacheBytes is the input cache's bound when
// Config.InputCacheBytes is zero.
const DefaultInputCacheBytes = 4 << 30

// Node is a running compute node. Create it with Start; it is safe for
// concurrent use.
type Node struct {
	cfg  Config
	log  *slog.Logger
	http *http.Client // to the control plane, with the node's certificate
	// id and natsURL are the node's, from its enrollment; renewal
	// changes neither.
	id, natsURL string

	credMu  sync.RWMutex // guards the current credential, which renewal replaces
	ident   identity
	tlsCert *tls.Certificate
	natsKey nkeys.KeyPair

	nc      *nats.Conn
	ctl     *nats.Subscription
	drivers map[string]sandbox.Driver
	closers []func(context.Context) error // drivers the node opened
	runsDir string
	cache   *blob.Cache // nil when turned off
	unlock  func()      // releases the data directory

	mu      sync.Mutex
	runs    map[string]*runHandle // runs whose agent is alive
	closing bool
	wg      sync.WaitGroup // agents

	stopBeat context.CancelFunc
	beatDone chan struct{}

	stopRenew context.CancelFunc
	renewDone chan struct{}

	done      chan struct{} // closed once the node has stopped
	doneOnce  sync.Once
	closeOnce sync.Once
	closeErr  error
}

// runHandle is one live run.
type runHandle struct {
	cancel context.CancelCauseFunc
}

// labelKey is the shape of a label key, as the node registry checks it.
var labelKey = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$`)

// Causes of a run's end that the node makes itself.
var (
	errStopped    = errors.New("stopped by the control plane")
	errReconciled = errors.New("the control plane does not list the run as active")
	errClosing    = errors.New("the node is shutting down")
)

// Start enrolls the node unless DataDir holds an enrollment already,
// connects to NATS, and starts heartbeating and taking commands. ctx bounds
// the start only; the node runs until Close. Errors: Invalid for a bad
// Config or a missing token, Unauthenticated or Forbidden when the control
// plane refuses the enrollment, Unavailable when it or NATS cannot be
// reached.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:       cfg,
		log:       cfg.Log,
		runs:      map[string]*runHandle{},
		runsDir:   cmp.Or(cfg.RunsDir, filepath.Join(cfg.DataDir, "runs")),
		done:      make(chan struct{}),
		beatDone:  make(chan struct{}),
		renewDone: make(chan struct{}),
	}
	if n.unlock, err = lockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			n.closeDrivers()
			n.unlock()
		}
	}()

	if err := n.prepareDataDir(); err != nil {
		return nil, err
	}
	if cfg.InputCacheBytes > 0 {
		if n.cache, err = blob.OpenCache(filepath.Join(cfg.DataDir, "cache"), cfg.InputCacheBytes); err != nil {
			return nil, err
		}
	}
	n.drivers = cfg.Drivers
	if n.drivers == nil {
		if n.drivers, n.closers, err = openDrivers(cfg.DataDir, nil, n.log); err != nil {
			return nil, err
		}
	}
	if len(n.available()) == 0 {
		return nil, cove.Errorf(cove.Invalid, "the node has no available sandbox driver")
	}
	n.checkSandboxReach()

	id, err := n.enrollment(ctx)
	if err != nil {
		return nil, err
	}
	if err := n.useCredential(id); err != nil {
		return nil, err
	}
	n.id, n.natsURL = id.NodeID, id.NATSURL
	if n.http, err = n.httpClient(id); err != nil {
		return nil, err
	}
	n.log = n.log.With("node", id.NodeID)
	if err := n.checkSelf(ctx); err != nil {
		return nil, err
	}
	if err := n.connect(ctx); err != nil {
		return nil, err
	}
	renewCtx, stopRenew := context.WithCancel(context.Background())
	n.stopRenew = stopRenew
	go n.renewLoop(renewCtx)

	beatCtx, stop := context.WithCancel(context.Background())
	n.stopBeat = stop
	go n.heartbeat(beatCtx)
	ok = true
	n.log.Info("node started", "name", cfg.Name, "nats", n.natsURL, "drivers", n.available(),
		"cpus", cfg.Capacity.CPUs, "memory_bytes", cfg.Capacity.MemoryBytes, "disk_bytes", cfg.Capacity.DiskBytes)
	return n, nil
}

func (c Config) withDefaults() (Config, error) {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	c.DataDir = cmp.Or(c.DataDir, DefaultDataDir)
	c.InputCacheBytes = cmp.Or(c.InputCacheBytes, DefaultInputCacheBytes)
	if c.Name == "" {
		c.Name, _ = os.Hostname()
		c.Name = cmp.Or(c.Name, "cove-node")
	}
	for k, v := range c.Labels {
		if !labelKey.MatchString(k) || strings.ContainsRune(v, 0) || len(v) > 256 {
			return c, cove.Errorf(cove.Invalid, "label %q: keys are a letter or digit, then up to 62 of [A-Za-z0-9_./-]; values up to 256 bytes", k)
		}
	}
	if c.Capacity.CPUs < 0 || c.Capacity.MemoryBytes < 0 || c.Capacity.DiskBytes < 0 {
		return c, cove.Errorf(cove.Invalid, "capacity must not be negative")
	}
	if err := os.MkdirAll(c.DataDir, 0o711); err != nil {
		return c, &cove.Error{Code: cove.Invalid, Message: "cannot create the data directory " + c.DataDir, Err: err}
	}
	host := hostResources(c.DataDir)
	c.Capacity.CPUs = cmp.Or(c.Capacity.CPUs, host.CPUs)
	c.Capacity.MemoryBytes = cmp.Or(c.Capacity.MemoryBytes, host.MemoryBytes)
	c.Capacity.DiskBytes = cmp.Or(c.Capacity.DiskBytes, host.DiskBytes)
	return c, nil
}

// prepareDataDir wipes work directories a previous process left: their
// agents died with it, and they may hold decrypted datasets.
func (n *Node) prepareDataDir() error {
	if err := os.RemoveAll(n.runsDir); err != nil {
		return cove.Wrap(err, "cannot clear the runs directory")
	}
	if err := os.Mkdir(n.runsDir, 0o711); err != nil {
		return cove.Wrap(err, "cannot create the runs directory")
	}
	return nil
}

// checkSandboxReach warns when the process driver, running as root, would
// start sandboxes as a user that cannot reach the work directories.
func (n *Node) checkSandboxReach() {
	if _, ok := n.drivers["process"]; !ok || os.Geteuid() != 0 {
		return
	}
	dir, err := filepath.Abs(n.runsDir)
	if err != nil {
		return
	}
	for {
		if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o001 == 0 {
			n.log.Warn("the process driver's sandbox user cannot reach the runs directory: give every directory above it o+x",
				"dir", dir, "mode", fi.Mode().Perm())
			return
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return
		}
		dir = parent
	}
}

// connect opens the node's NATS connection and takes commands.
func (n *Node) connect(ctx context.Context) error {
	opts := []nats.Option{
		nats.Name("cove node " + n.cfg.Name),
		nats.UserJWT(n.natsJWT, n.natsSign),
		nats.CustomInboxPrefix(natsbus.NodeInboxPrefix(n.id)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ClosedHandler(func(*nats.Conn) {
			n.mu.Lock()
			closing := n.closing
			n.mu.Unlock()
			if !closing { // lost for good; Close closes done itself, when it is through
				n.log.Error("the NATS connection closed for good: the node's credential may be revoked or expired")
				n.doneOnce.Do(func() { close(n.done) })
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				n.log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			n.log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted())
			n.beat()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			n.log.Error("NATS error", "err", err)
		}),
	}
	nc, err := nats.Connect(n.natsURL, opts...)
	if err != nil {
		return &cove.Error{Code: cove.Unavailable, Message: "cannot connect to NATS at " + n.natsURL, Err: err}
	}
	n.nc = nc
	if n.ctl, err = nc.Subscribe(natsbus.NodeControl(n.id), n.control); err != nil {
		nc.Close()
		return &cove.Error{Code: cove.Unavailable, Message: "cannot listen for commands", Err: err}
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := nc.FlushWithContext(fctx); err != nil {
		nc.Close()
		return &cove.Error{Code: cove.Unavailable, Message: "NATS did not confirm the node's subscription", Err: err}
	}
	if err := nc.LastError(); err != nil {
		nc.Close()
		return &cove.Error{Code: cove.Forbidden, Message: "NATS refused the node's subscription: is node.json from this control plane?", Err: err}
	}
	return nil
}

// ID returns the node's ID, as the control plane knows it.
func (n *Node) ID() string { return n.id }

// Done is closed when the node has stopped: after Close, or when its NATS
// connection closed for good (the credential was revoked or expired).
func (n *Node) Done() <-chan struct{} { return n.done }

// Close stops taking commands, stops every run and waits for their agents
// to return, sends a last heartbeat with no runs, and closes the NATS
// connection and the drivers the node opened. It is safe to call more than
// once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if n.ctl != nil {
			_ = n.ctl.Unsubscribe()
		}
		n.mu.Lock()
		n.closing = true
		for _, h := range n.runs {
			h.cancel(errClosing)
		}
		n.mu.Unlock()
		n.wg.Wait()

		if n.stopBeat != nil {
			n.stopBeat()
			<-n.beatDone
		}
		if n.stopRenew != nil {
			n.stopRenew()
			<-n.renewDone
		}
		n.beat() // lists no run: the control plane need not wait for a timeout
		if n.nc != nil {
			if err := n.nc.FlushTimeout(5 * time.Second); err != nil {
				n.log.Warn("cannot flush the last heartbeat", "err", err)
			}
			n.nc.Close()
		}
		n.closeErr = n.closeDrivers()
		n.credMu.Lock()
		if n.natsKey != nil {
			n.natsKey.Wipe()
		}
		n.credMu.Unlock()
		n.unlock()
		n.doneOnce.Do(func() { close(n.done) })
		n.log.Info("node stopped")
	})
	return n.closeErr
}

func (n *Node) closeDrivers() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	var errs []error
	for _, c := range n.closers {
		errs = append(errs, c(ctx))
	}
	n.closers = nil
	return errors.Join(errs...)
}

// available returns the names of the drivers that can run now, sorted.
func (n *Node) available() []string {
	var names []string
	for _, name := range slices.Sorted(maps.Keys(n.drivers)) {
		if n.drivers[name].Available() == nil {
			names = append(names, name)
		}
	}
	return names
}

// heartbeat publishes a heartbeat every interval the control plane gave
// at enrollment (runproto.NodeHeartbeatInterval if none) until ctx ends.
func (n *Node) heartbeat(ctx context.Context) {
	defer close(n.beatDone)
	every := runproto.NodeHeartbeatInterval
	if ms := n.current().HeartbeatMillis; ms > 0 {
		every = time.Duration(ms) * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n.beat()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *Node) beat() {
	if n.nc == nil {
		return
	}
	n.mu.Lock()
	running := slices.Sorted(maps.Keys(n.runs))
	n.mu.Unlock()
	if running == nil {
		running = []string{} // "running": [] tells the control plane there is none
	}
	hb := runproto.Heartbeat{
		NodeID:   n.id,
		Time:     time.Now().UTC(),
		Capacity: n.cfg.Capacity,
		Running:  running,
		Drivers:  n.available(),
	}
	b, err := json.Marshal(hb)
	if err == nil {
		err = n.nc.Publish(natsbus.NodeHeartbeat(n.id), b)
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		n.log.Warn("cannot publish a heartbeat", "err", err)
	}
}

// control answers a command from the control plane.
func (n *Node) control(msg *nats.Msg) {
	var cmd runproto.Command
	var err error
	if jerr := json.Unmarshal(msg.Data, &cmd); jerr != nil {
		err = &cove.Error{Code: cove.Invalid, Message: "the command is not valid JSON", Err: jerr}
	} else {
		switch {
		case cmd.Start != nil && cmd.Stop == nil && cmd.Reconcile == nil:
			err = n.start(cmd.Start)
		case cmd.Stop != nil && cmd.Start == nil && cmd.Reconcile == nil:
			n.stop(cmd.Stop)
		case cmd.Reconcile != nil && cmd.Start == nil && cmd.Stop == nil:
			n.reconcile(cmd.Reconcile)
		default:
			err = cove.Errorf(cove.Invalid, "a command sets exactly one of start, stop and reconcile")
		}
	}
	if err != nil {
		n.log.Warn("command refused", "err", err)
	}
	if msg.Reply == "" {
		return
	}
	b, _ := json.Marshal(runproto.Reply{Error: runproto.ErrorOf(err)})
	if rerr := msg.Respond(b); rerr != nil {
		n.log.Warn("cannot answer a command", "err", rerr)
	}
}

// start launches the agent of a run. It returns once the run is
// registered; the agent works in its own goroutine.
func (n *Node) start(s *runproto.Start) error {
	if !validRunID(s.RunID) {
		return cove.Errorf(cove.Invalid, "run ID %q is not valid", s.RunID)
	}
	if _, err := nkeys.ParseDecoratedNKey([]byte(s.Creds)); err != nil {
		return cove.Errorf(cove.Invalid, "the start of run %s carries no valid credential", s.RunID)
	}
	d, ok := n.drivers[s.Driver]
	if !ok {
		return cove.Errorf(cove.Invalid, "this node has no %q driver", s.Driver)
	}
	if err := d.Available(); err != nil {
		return cove.Errorf(cove.Unavailable, "the %s driver is not available on this node", s.Driver)
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closing {
		return cove.Errorf(cove.Unavailable, "the node is shutting down")
	}
	if _, ok := n.runs[s.RunID]; ok {
		return cove.Errorf(cove.Conflict, "run %s is running on this node already", s.RunID)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	h := &runHandle{cancel: cancel}
	n.runs[s.RunID] = h
	n.wg.Add(1)
	// The goroutine carries the run ID as a profiler label, so a goroutine
	// dump names the run each agent works for.
	go pprof.Do(ctx, pprof.Labels("cove_run", s.RunID), func(ctx context.Context) {
		defer n.wg.Done()
		n.runAgent(ctx, s, d, h)
	})
	return nil
}

// runAgent runs the agent of a run to its end and forgets the run.
func (n *Node) runAgent(ctx context.Context, s *runproto.Start, d sandbox.Driver, h *runHandle) {
	defer func() {
		h.cancel(nil)
		n.mu.Lock()
		delete(n.runs, s.RunID)
		n.mu.Unlock()
		n.beat() // the control plane learns now that the sandbox is gone
	}()
	log := n.log.With("run", s.RunID)
	log.Info("run starting", "driver", s.Driver)
	out, err := agent.Run(ctx, agent.Config{
		NATSURL: cmp.Or(s.NATSURL, n.natsURL),
		Creds:   []byte(s.Creds),
		RunID:   s.RunID,
		// Only the driver the control plane planned for: the agent cannot
		// pick another.
		Drivers: map[string]sandbox.Driver{s.Driver: d},
		WorkDir: filepath.Join(n.runsDir, s.RunID),
		Cache:   n.cache,
		Log:     n.log,
	})
	if err != nil {
		log.Error("run ended without reporting", "state", out.State, "err", err)
		return
	}
	log.Info("run ended", "state", out.State, "reason", out.Reason, "cause", context.Cause(ctx))
}

// stop cancels a run. Stopping a run the node does not have is not an
// error: the control plane may repeat itself.
func (n *Node) stop(s *runproto.Stop) {
	n.mu.Lock()
	h := n.runs[s.RunID]
	n.mu.Unlock()
	if h != nil {
		n.log.Info("stopping run", "run", s.RunID, "reason", s.Reason)
		h.cancel(errStopped)
	}
}

// reconcile cancels the runs the control plane found stale. It looked
// some time ago: a run started since is in no list, and must live on.
// Without a stale list it cancels every run the control plane does not
// list as active, as control planes before the list ask.
func (n *Node) reconcile(r *runproto.Reconcile) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, h := range n.runs {
		if r.Stale != nil && slices.Contains(r.Stale, id) || r.Stale == nil && !slices.Contains(r.Active, id) {
			n.log.Warn("stopping a run the control plane does not know as active", "run", id)
			h.cancel(errReconciled)
		}
	}
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
