// Package computationtest runs the computation service for tests: the real
// service over the real SQL store (SQLite, and PostgreSQL when
// COVE_TEST_DATABASE_URL is set) and the real OpenFGA authorizer, served by
// the real httpapi handler. What other components provide (the catalog,
// the scheduler, the nodes, the log stream, the result blobs) is replaced
// by hand-written fakes with function fields that tests may swap.
package computationtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/authz"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/fga"
	"github.com/covecompute/cove/fga/fgatest"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/scheduler"
	"github.com/covecompute/cove/sqlstore"
	"github.com/covecompute/cove/workspace"
)

// Password is every test user's password.
const Password = "correct horse battery"

// Catalog is a fake computation.Catalog.
type Catalog struct {
	UseAlgorithmFunc func(ctx context.Context, p cove.Principal, id string) (*catalog.Algorithm, error)
	UseDatasetFunc   func(ctx context.Context, p cove.Principal, id string) (*catalog.Dataset, error)
}

// UseAlgorithm calls UseAlgorithmFunc.
func (c *Catalog) UseAlgorithm(ctx context.Context, p cove.Principal, id string) (*catalog.Algorithm, error) {
	return c.UseAlgorithmFunc(ctx, p, id)
}

// UseDataset calls UseDatasetFunc.
func (c *Catalog) UseDataset(ctx context.Context, p cove.Principal, id string) (*catalog.Dataset, error) {
	return c.UseDatasetFunc(ctx, p, id)
}

// Scheduler is a fake computation.Scheduler.
type Scheduler struct {
	EnqueueFunc  func(ctx context.Context, r scheduler.Request) error
	ReleaseFunc  func(ctx context.Context, runID string)
	BlockersFunc func(r scheduler.Request) []string
}

// Enqueue calls EnqueueFunc.
func (s *Scheduler) Enqueue(ctx context.Context, r scheduler.Request) error {
	return s.EnqueueFunc(ctx, r)
}

// Release calls ReleaseFunc.
func (s *Scheduler) Release(ctx context.Context, runID string) { s.ReleaseFunc(ctx, runID) }

// Blockers calls BlockersFunc.
func (s *Scheduler) Blockers(r scheduler.Request) []string { return s.BlockersFunc(r) }

// Stopper is a fake computation.Stopper.
type Stopper struct {
	StopRunFunc func(ctx context.Context, run *computation.Run) error
}

// StopRun calls StopRunFunc.
func (s *Stopper) StopRun(ctx context.Context, run *computation.Run) error {
	return s.StopRunFunc(ctx, run)
}

// LogReader is a fake computation.LogReader.
type LogReader struct {
	ReadLogsFunc func(ctx context.Context, runID string, afterSeq int64, follow bool, fn func(runproto.LogLine) error) error
}

// ReadLogs calls ReadLogsFunc.
func (l *LogReader) ReadLogs(ctx context.Context, runID string, afterSeq int64, follow bool, fn func(runproto.LogLine) error) error {
	return l.ReadLogsFunc(ctx, runID, afterSeq, follow, fn)
}

// ResultBlobs is a fake computation.ResultBlobs.
type ResultBlobs struct {
	OpenFunc func(ctx context.Context, sha256 string) (io.ReadCloser, int64, error)
}

// Open calls OpenFunc.
func (r *ResultBlobs) Open(ctx context.Context, sha256 string) (io.ReadCloser, int64, error) {
	return r.OpenFunc(ctx, sha256)
}

// Env is a running computation service with its fakes. By default the
// catalog answers from the entries added with AddAlgorithm and AddDataset,
// the scheduler records what it is asked and finds every request placeable,
// the stopper records stops, the log reader has no lines and the result
// blobs are those added with PutResult.
type Env struct {
	Engine    string
	DB        *sqlstore.DB
	Authz     *authz.Authorizer
	Identity  *identity.Service
	Workspace *workspace.Service
	Service   *computation.Service
	API       *httpapi.Server
	// URL is the API server's base URL.
	URL string

	Catalog   *Catalog
	Scheduler *Scheduler
	Stopper   *Stopper
	Logs      *LogReader
	Results   *ResultBlobs

	mu         sync.Mutex
	algorithms map[string]*catalog.Algorithm
	datasets   map[string]*catalog.Dataset
	blobs      map[string][]byte
	enqueued   []scheduler.Request
	released   []string
	stopped    []string
}

// Engines names the engines tests should cover: sqlite, and postgres when
// COVE_TEST_DATABASE_URL is set.
func Engines() []string {
	es := []string{fga.SQLite}
	if os.Getenv(fgatest.DatabaseURLEnv) != "" {
		es = append(es, fga.Postgres)
	}
	return es
}

// ForEngines runs f as a subtest on every engine.
func ForEngines(t *testing.T, f func(t *testing.T, e *Env)) {
	for _, engine := range Engines() {
		t.Run(engine, func(t *testing.T) { f(t, New(t, engine)) })
	}
}

// New starts an Env on engine ("sqlite" or "postgres") that stops when
// the test ends.
func New(tb testing.TB, engine string) *Env {
	tb.Helper()
	ctx := context.Background()
	var cfg fga.Config
	var dbURL string
	if engine == fga.Postgres {
		cfg = fgatest.Postgres(tb)
		dbURL = cfg.URI
	} else {
		cfg = fgatest.SQLite(tb)
		dbURL = filepath.Join(filepath.Dir(cfg.URI), "cove.db")
	}
	db, err := sqlstore.Open(ctx, dbURL, nil)
	if err != nil {
		tb.Fatalf("open database: %v", err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	az := authz.New(fgatest.MustOpen(tb, cfg))

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	e := &Env{
		Engine: engine, DB: db, Authz: az,
		algorithms: map[string]*catalog.Algorithm{}, datasets: map[string]*catalog.Dataset{}, blobs: map[string][]byte{},
	}
	e.Identity = identity.NewService(sqlstore.NewIdentityStore(db), az, identity.Config{
		AccessTTL: time.Hour, RefreshTTL: time.Hour, MaxTokenTTL: 24 * time.Hour, OpenSignup: true,
		Argon2: identity.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}, SigningKey: key,
		LoginBurstPerEmail: 1000, LoginBurstPerClient: 1000, LoginRefill: time.Second,
	}, nil)
	e.Workspace = workspace.NewService(sqlstore.NewWorkspaceStore(db), az, nil, nil)
	e.Catalog = &Catalog{
		UseAlgorithmFunc: func(_ context.Context, _ cove.Principal, id string) (*catalog.Algorithm, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			if a, ok := e.algorithms[id]; ok {
				c := *a
				return &c, nil
			}
			return nil, cove.Errorf(cove.NotFound, "algorithm %s not found", id)
		},
		UseDatasetFunc: func(_ context.Context, _ cove.Principal, id string) (*catalog.Dataset, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			if d, ok := e.datasets[id]; ok {
				c := *d
				return &c, nil
			}
			return nil, cove.Errorf(cove.NotFound, "dataset %s not found", id)
		},
	}
	e.Scheduler = &Scheduler{
		EnqueueFunc: func(_ context.Context, r scheduler.Request) error {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.enqueued = append(e.enqueued, r)
			return nil
		},
		ReleaseFunc: func(_ context.Context, runID string) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.released = append(e.released, runID)
		},
		BlockersFunc: func(scheduler.Request) []string { return nil },
	}
	e.Stopper = &Stopper{StopRunFunc: func(_ context.Context, r *computation.Run) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.stopped = append(e.stopped, r.ID)
		return nil
	}}
	e.Logs = &LogReader{ReadLogsFunc: func(context.Context, string, int64, bool, func(runproto.LogLine) error) error { return nil }}
	e.Results = &ResultBlobs{OpenFunc: func(_ context.Context, sum string) (io.ReadCloser, int64, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		b, ok := e.blobs[sum]
		if !ok {
			return nil, 0, cove.Errorf(cove.NotFound, "blob %s not found", sum)
		}
		return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
	}}
	e.Service = computation.NewService(sqlstore.NewComputationStore(db), e.Catalog, az, e.Scheduler, nil)
	e.Service.Stopper = e.Stopper

	e.API = httpapi.New(httpapi.Deps{
		Identity: e.Identity, Workspace: e.Workspace,
		Audit: &audit.Service{Store: sqlstore.NewAuditStore(db), Authz: az},
		Ready: map[string]httpapi.Pinger{"database": db}, Version: "test",
	})
	e.API.MountComputations(e.Service, e.Logs, e.Results)
	srv := httptest.NewServer(e.API)
	tb.Cleanup(srv.Close)
	e.URL = srv.URL

	// The first account becomes platform admin; keep test users ordinary.
	e.User(tb, "root@cove.test")
	return e
}

// User is a signed-up test user.
type User struct {
	cove.Principal
	// Token is an access token for the API.
	Token string
}

// User signs email up and logs in.
func (e *Env) User(tb testing.TB, email string) User {
	tb.Helper()
	ctx := context.Background()
	u, err := e.Identity.Signup(ctx, cove.Principal{}, identity.SignupInput{Email: email, Name: email, Password: Password})
	if err != nil {
		tb.Fatalf("signup %s: %v", email, err)
	}
	t, err := e.Identity.Login(ctx, identity.LoginInput{Email: email, Password: Password, Client: "test"})
	if err != nil {
		tb.Fatalf("login %s: %v", email, err)
	}
	return User{Principal: cove.Principal{UserID: u.ID, Email: u.Email, Admin: u.Admin}, Token: t.AccessToken}
}

// NewWorkspace creates a workspace owned by owner.
func (e *Env) NewWorkspace(tb testing.TB, owner cove.Principal, name string) string {
	tb.Helper()
	w, err := e.Workspace.Create(context.Background(), owner, name)
	if err != nil {
		tb.Fatalf("create workspace: %v", err)
	}
	return w.ID
}

// Join makes p a member of workspace ws with role, invited by owner.
func (e *Env) Join(tb testing.TB, owner cove.Principal, ws string, p cove.Principal, role workspace.Role) {
	tb.Helper()
	ctx := context.Background()
	inv, err := e.Workspace.Invite(ctx, owner, ws, p.Email, role)
	if err != nil {
		tb.Fatalf("invite: %v", err)
	}
	if _, err := e.Workspace.Accept(ctx, p, inv.Token); err != nil {
		tb.Fatalf("accept: %v", err)
	}
}

func randomSHA() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// AddAlgorithm adds an algorithm of kind published by workspace ws to the
// fake catalog.
func (e *Env) AddAlgorithm(ws, kind string) *catalog.Algorithm {
	a := &catalog.Algorithm{
		ID: cove.NewID("alg"), WorkspaceID: ws, Name: "algo", Kind: kind, FileName: "main.wasm",
		SHA256: randomSHA(), Size: 1234, Args: []string{"--entry"}, Visibility: catalog.Public,
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.algorithms[a.ID] = a
	return a
}

// AddDataset adds a dataset of workspace ws with policy to the fake
// catalog.
func (e *Env) AddDataset(ws string, policy catalog.Policy) *catalog.Dataset {
	d := &catalog.Dataset{
		ID: cove.NewID("ds"), WorkspaceID: ws, Name: "data", Format: catalog.FormatFile, FileName: "data.csv",
		SHA256: randomSHA(), Size: 99, Visibility: catalog.Public, Policy: policy,
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.datasets[d.ID] = d
	return d
}

// SetPolicy replaces a dataset's policy in the fake catalog.
func (e *Env) SetPolicy(datasetID string, policy catalog.Policy) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.datasets[datasetID].Policy = policy
}

// PutResult stores a result blob and returns its SHA-256.
func (e *Env) PutResult(b []byte) string {
	sum := sha256.Sum256(b)
	s := hex.EncodeToString(sum[:])
	e.mu.Lock()
	defer e.mu.Unlock()
	e.blobs[s] = b
	return s
}

// Enqueued returns the requests the scheduler got.
func (e *Env) Enqueued() []scheduler.Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]scheduler.Request(nil), e.enqueued...)
}

// Released returns the runs the scheduler was told to release.
func (e *Env) Released() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.released...)
}

// Stopped returns the runs the stopper was told to stop.
func (e *Env) Stopped() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.stopped...)
}

// Key returns a new age X25519 identity.
func Key(tb testing.TB) *age.X25519Identity {
	tb.Helper()
	k, err := age.GenerateX25519Identity()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// Spec returns a computation spec of alg over datasets (named d0, d1, ...)
// for the result consumers.
func Spec(alg *catalog.Algorithm, datasets []*catalog.Dataset, consumers ...computation.ResultConsumer) computation.Spec {
	s := computation.Spec{AlgorithmID: alg.ID, ResultConsumers: consumers}
	for i, d := range datasets {
		s.Datasets = append(s.Datasets, computation.DatasetRef{Name: "d" + strconv.Itoa(i), DatasetID: d.ID})
	}
	return s
}
