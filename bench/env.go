package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"
	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL driver, to create scratch databases

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/computenode"
	"github.com/covecompute/cove/config"
	"github.com/covecompute/cove/driver/wasm"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/node"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sandbox"
	"github.com/covecompute/cove/sdk"
	"github.com/covecompute/cove/tlstrust"
)

// Per-run limits of the benchmark computations, and so what one run
// reserves on a node.
const (
	runMemory = 128 << 20
	runDisk   = 64 << 20
)

// Setup shapes one deployment.
type Setup struct {
	Nodes int // in-process compute nodes
	Slots int // runs each node holds at once (its capacity in run limits)
	// Driver runs the algorithms on every node under the name "wasm"; nil
	// means one real wasm driver shared by the nodes.
	Driver sandbox.Driver
	Wasm   string // path of the algorithm module
	// Dataset is the dataset's content; nil uploads DatasetBytes of CSV.
	Dataset      io.Reader
	DatasetBytes int64
	// RunDisk is each run's disk limit; 0 means 64 MiB.
	RunDisk int64
}

// Env is a running deployment: a control plane, its nodes, and one
// workspace holding a dataset and an algorithm its policy allows.
type Env struct {
	Main      *app.Main
	Client    *sdk.Client // holds a personal access token of the workspace's owner
	Token     string      // that token
	Workspace string
	Algorithm string
	Dataset   string
	Consumer  computation.ResultConsumer
	// TLS trusts the control plane's CA, which signs its HTTPS
	// certificate; nil when it serves plain HTTP.
	TLS     *tls.Config
	runDisk int64
	closers []func()
}

// Start starts a control plane configured as o.Config in a new data
// directory under dir, and the nodes of s, uploads the dataset and the
// algorithm, and waits until every node is online. Close it.
func Start(ctx context.Context, o Options, dir string, s Setup) (e *Env, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	e = &Env{runDisk: s.RunDisk}
	if e.runDisk == 0 {
		e.runDisk = runDisk
	}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	cfg, drop, err := serverConfig(ctx, o, filepath.Join(dir, "server"))
	if err != nil {
		return e, err
	}
	e.closers = append(e.closers, drop)
	m := app.NewMain(cfg, warnWriter{o.Progress}, io.Discard)
	e.closers = append(e.closers, func() { _ = m.Close() })
	if err := m.Run(ctx); err != nil {
		return e, fmt.Errorf("start the control plane: %w", err)
	}
	e.Main = m
	if strings.HasPrefix(m.URL, "https://") {
		if e.TLS, err = tlstrust.Config(m.CA.ChainPEM(), ""); err != nil {
			return e, err
		}
	}

	c, tok, err := ownerClient(ctx, m.URL, e.TLS)
	if err != nil {
		return e, err
	}
	e.Client, e.Token = c, tok
	me, err := c.Me(ctx)
	if err != nil {
		return e, fmt.Errorf("me: %w", err)
	}
	ws, err := c.CreateWorkspace(ctx, "bench")
	if err != nil {
		return e, fmt.Errorf("workspace: %w", err)
	}
	e.Workspace = ws.ID
	data, size := s.Dataset, s.DatasetBytes
	if data == nil {
		data = bytes.NewReader(Dataset(int(size)))
	}
	ds, err := c.UploadDataset(ctx, ws.ID, catalog.DatasetUpload{Name: "data", Format: catalog.FormatFile, FileName: "data.csv"}, data, size, nil)
	if err != nil {
		return e, fmt.Errorf("dataset: %w", err)
	}
	e.Dataset = ds.ID
	if _, err = c.SetDatasetPolicy(ctx, ds.ID, catalog.Policy{AllowAnyAlgorithm: true, RequiredTEE: catalog.TEENone}); err != nil {
		return e, fmt.Errorf("policy: %w", err)
	}
	mod, err := os.ReadFile(s.Wasm)
	if err != nil {
		return e, cove.Wrap(err, "cannot read the algorithm module")
	}
	alg, err := c.UploadAlgorithm(ctx, ws.ID, catalog.AlgorithmUpload{Name: "bench", Kind: catalog.KindWasm, FileName: "bench.wasm"},
		bytes.NewReader(mod), int64(len(mod)), nil)
	if err != nil {
		return e, fmt.Errorf("algorithm: %w", err)
	}
	e.Algorithm = alg.ID
	key, err := age.GenerateX25519Identity()
	if err != nil {
		return e, err
	}
	e.Consumer = computation.ResultConsumer{UserID: me.ID, Recipient: key.Recipient().String()}

	drv := s.Driver
	if drv == nil {
		d, err := wasm.New(wasm.Config{CacheDir: filepath.Join(dir, "wasm-cache")})
		if err != nil {
			return e, fmt.Errorf("wasm driver: %w", err)
		}
		e.closers = append(e.closers, func() { _ = d.Close(context.Background()) })
		drv = d
	}
	log := slog.New(slog.NewTextHandler(warnWriter{o.Progress}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for i := range s.Nodes {
		tok, err := c.CreateEnrollToken(ctx, httpapi.EnrollTokenInput{AutoApprove: true})
		if err != nil {
			return e, fmt.Errorf("enroll token: %w", err)
		}
		n, err := computenode.Start(ctx, computenode.Config{
			ServerURL:     m.URL,
			CAFingerprint: m.CA.RootFingerprint(),
			Token:         tok.Token,
			Name:          fmt.Sprintf("bench-%d", i),
			DataDir:       filepath.Join(dir, fmt.Sprintf("node-%d", i)),
			Capacity: runproto.Resources{
				CPUs:        float64(s.Slots),
				MemoryBytes: int64(s.Slots) * runMemory,
				DiskBytes:   int64(s.Slots) * e.runDisk,
			},
			Drivers: map[string]sandbox.Driver{"wasm": drv},
			Log:     log,
		})
		if err != nil {
			return e, fmt.Errorf("start node %d: %w", i, err)
		}
		// Nodes close before the driver they share and the control plane.
		e.closers = append(e.closers, func() { _ = n.Close() })
	}
	return e, waitOnline(ctx, c, s.Nodes)
}

// waitOnline waits until want nodes are online and active.
func waitOnline(ctx context.Context, c *sdk.Client, want int) error {
	for {
		up := 0
		opts := sdk.ListOptions{Limit: 100}
		for {
			nodes, next, err := c.ListNodes(ctx, sdk.NodeFilter{}, opts)
			if err != nil {
				return fmt.Errorf("list nodes: %w", err)
			}
			for _, n := range nodes {
				if n.Online && n.State == node.Active {
					up++
				}
			}
			if next == "" {
				break
			}
			opts.Cursor = next
		}
		if up >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d nodes online: %w", up, want, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close stops the nodes, then the control plane, and drops its scratch
// database.
func (e *Env) Close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	e.closers = nil
}

// ownerClient signs up a user on the control plane at base and returns a
// client holding a personal access token of theirs, which does not expire
// during a long benchmark, over a pooled transport that keeps 64
// concurrent clients off new connections (the default keeps 2 idle per
// host).
func ownerClient(ctx context.Context, base string, trust *tls.Config) (*sdk.Client, string, error) {
	anon, err := sdk.New(base, sdk.WithTLS(trust))
	if err != nil {
		return nil, "", err
	}
	const email, password = "bench@example.com", "correct horse battery"
	if _, err = anon.Signup(ctx, identity.SignupInput{Email: email, Name: "Bench", Password: password}); err != nil {
		return nil, "", fmt.Errorf("signup: %w", err)
	}
	if _, err = anon.Login(ctx, identity.LoginInput{Email: email, Password: password}); err != nil {
		return nil, "", fmt.Errorf("login: %w", err)
	}
	pat, err := anon.CreateToken(ctx, httpapi.TokenInput{Name: "bench", ExpiresIn: "24h"})
	if err != nil {
		return nil, "", fmt.Errorf("token: %w", err)
	}
	c, err := sdk.New(base, sdk.WithToken(pat.Secret), sdk.WithHTTPClient(pooledClient(trust)))
	return c, pat.Secret, err
}

// pooledClient trusts trust (nil: the system's roots) and keeps up to 512
// idle connections.
func pooledClient(trust *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = trust
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 512, 512
	return &http.Client{Timeout: 10 * time.Minute, Transport: tr}
}

// serverConfig returns o.Config for a control plane in dir: free ports,
// cheap password hashing, generous login limits, and on PostgreSQL a
// scratch database that drop removes.
func serverConfig(ctx context.Context, o Options, dir string) (cfg config.Config, drop func(), err error) {
	cfg = o.Config
	cfg.DataDir = dir
	cfg.Dev = false
	cfg.HTTP.Addr = "127.0.0.1:0"
	if cfg.NATS.URL == "" {
		cfg.NATS.Port = -1
	}
	cfg.Auth.Argon2 = identity.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}
	cfg.Auth.LoginBurstPerEmail, cfg.Auth.LoginBurstPerClient = 1000, 1000
	cfg.Log.Level = "warn"
	drop = func() {}
	if cfg.Database.URL != "" {
		cfg.Database.URL, drop, err = scratchDB(ctx, cfg.Database.URL)
	}
	return cfg, drop, err
}

// scratchDB creates an empty database on the PostgreSQL server of base and
// returns its URL and a function that drops it.
func scratchDB(ctx context.Context, base string) (string, func(), error) {
	u, err := url.Parse(base)
	if err != nil || !strings.HasPrefix(u.Scheme, "postgres") {
		return "", nil, cove.Errorf(cove.Invalid, "the database URL is not a postgres:// URL")
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		return "", nil, cove.Wrap(err, "cannot open PostgreSQL")
	}
	defer admin.Close()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "cove_bench_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, &cove.Error{Code: cove.Unavailable, Message: "cannot create a scratch database: the bench needs CREATE DATABASE on the server of --database-url", Err: err}
	}
	drop := func() {
		db, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer db.Close()
		_, _ = db.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}

// Computation creates a computation of the algorithm over the dataset.
func (e *Env) Computation(ctx context.Context, args ...string) (string, error) {
	c, err := e.Client.CreateComputation(ctx, e.Workspace, computation.Spec{
		AlgorithmID:     e.Algorithm,
		Args:            args,
		Datasets:        []computation.DatasetRef{{Name: "data", DatasetID: e.Dataset}},
		ResultConsumers: []computation.ResultConsumer{e.Consumer},
		Limits:          computation.Limits{CPUs: 1, MemoryBytes: runMemory, DiskBytes: e.runDisk, MaxDurationSeconds: 600},
	})
	if err != nil {
		return "", fmt.Errorf("create computation: %w", err)
	}
	return c.ID, nil
}

// RunResult is one timed run.
type RunResult struct {
	ID    string
	Start time.Time     // when StartRun was called
	Took  time.Duration // StartRun called to the log follower's end event
	Err   error         // not nil when the run did not succeed
}

// End is when the follower saw the run end.
func (r RunResult) End() time.Time { return r.Start.Add(r.Took) }

// Run starts a run of compID and follows its log until the end event, no
// polling: the figure includes what a following client waits for after the
// run ends. fn, when not nil, sees each line.
func (e *Env) Run(ctx context.Context, compID string, fn func(runproto.LogLine) error) RunResult {
	start := time.Now()
	r, err := e.Client.StartRun(ctx, compID)
	if err != nil {
		return RunResult{Start: start, Err: fmt.Errorf("start run: %w", err)}
	}
	if fn == nil {
		fn = func(runproto.LogLine) error { return nil }
	}
	end, err := e.Client.Logs(ctx, r.ID, sdk.LogOptions{Follow: true}, fn)
	rr := RunResult{ID: r.ID, Start: start, Took: time.Since(start)}
	switch {
	case err != nil:
		rr.Err = fmt.Errorf("follow run %s: %w", r.ID, err)
	case end == nil:
		rr.Err = fmt.Errorf("run %s: the log stream ended without an end event", r.ID)
	case end.State != computation.Succeeded:
		rr.Err = fmt.Errorf("run %s ended %s (%s): %s", r.ID, end.State, end.Reason, end.Message)
	}
	return rr
}

// Dataset returns size bytes of CSV.
func Dataset(size int) []byte {
	var buf bytes.Buffer
	buf.WriteString("id,value\n")
	for i := 0; buf.Len() < size; i++ {
		fmt.Fprintf(&buf, "%d,%d\n", i, i*7919%1000003)
	}
	return buf.Bytes()[:size]
}

// warnWriter passes the control plane's and nodes' warnings to the
// progress writer: a benchmark should cause none.
type warnWriter struct{ w io.Writer }

func (w warnWriter) Write(p []byte) (int, error) {
	if w.w == nil {
		return len(p), nil
	}
	return w.w.Write(p)
}

var _ sandbox.Driver = NoopDriver{}

// NoopDriver is a sandbox driver that runs nothing: it writes one output
// file and one log line, as the hello sample does, and returns. Registered
// as "wasm", it leaves the control plane, the agent and the bus alone in
// the measurement.
type NoopDriver struct {
	// Started, when not nil, is called with each run's spec first.
	Started func(sandbox.Spec)
}

// Name is "wasm": the driver stands in for the wasm driver.
func (NoopDriver) Name() string { return "wasm" }

// Kinds is the wasm kind.
func (NoopDriver) Kinds() []string { return []string{"wasm"} }

// Available always is.
func (NoopDriver) Available() error { return nil }

// Run writes hello.txt and one log line.
func (d NoopDriver) Run(_ context.Context, s sandbox.Spec) (sandbox.Result, error) {
	start := time.Now()
	if d.Started != nil {
		d.Started(s)
	}
	if err := os.WriteFile(filepath.Join(s.OutputDir, "hello.txt"), []byte("hello from a no-op sandbox\n"), 0o644); err != nil {
		return sandbox.Result{}, err
	}
	_, _ = io.WriteString(s.Stdout, "hello from a no-op sandbox\n")
	return sandbox.Result{Wall: time.Since(start)}, nil
}

// errSome joins the first error of many with their count.
func errSome(errs []error, total int) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d runs did not succeed; the first: %w", len(errs), total, errs[0])
}
