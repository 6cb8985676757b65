// Package app wires Cove's control plane together: it opens the stores and
// the bus, builds the services and serves the API. `cove serve` and the
// end-to-end tests both run it through Main, so what the tests start is
// what users run.
package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/authz"
	"github.com/covecompute/cove/computenode"
	"github.com/covecompute/cove/config"
	"github.com/covecompute/cove/dispatch"
	"github.com/covecompute/cove/fga"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/sqlstore"
	"github.com/covecompute/cove/workspace"
)

// Version is set at build time with -ldflags "-X .../app.Version=...".
var Version = "dev"

// Main is a running control plane.
type Main struct {
	Config config.Config
	Log    *slog.Logger
	// Out receives what a person starting the server should read: the
	// address and, with --dev, how to log in.
	Out io.Writer

	DB        *sqlstore.DB
	AuthzDB   *fga.Store
	Bus       *natsbus.Bus
	Authz     *authz.Authorizer
	Identity  *identity.Service
	Workspace *workspace.Service
	API       *httpapi.Server
	// Dispatch is the control plane's side of the run protocol over NATS.
	Dispatch         *dispatch.Dispatcher
	catalogParts     // Blobs *blob.FS and Catalog *catalog.Service (blobs.go)
	computationParts // Computations *computation.Service and RunLogs (computation.go)
	nodeParts        // Scheduler *scheduler.Scheduler, Nodes *node.Service and NodeConfig (nodes.go)
	caParts          // CA *ca.Service (ca.go)

	// URL is the base URL of the API once Run has returned.
	URL string
	// DevPassword is the seeded admin's password with --dev.
	DevPassword string

	devNode *computenode.Node
	// signingKeyBytes signs access tokens; other per-deployment keys are
	// derived from it.
	signingKeyBytes []byte
	ln              net.Listener
	tlsCert         *serverCert // the listener's; nil with plain HTTP
	http            *http.Server
	done            chan error
	closeOnce       sync.Once
	closeErr        error
}

// NewMain returns a Main for cfg that logs to logOut and prints to out.
func NewMain(cfg config.Config, logOut, out io.Writer) *Main {
	level := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}[cfg.Log.Level]
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(logOut, opts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(logOut, opts)
	}
	return &Main{Config: cfg, Log: slog.New(h), Out: out}
}

// Run opens every dependency, starts serving and returns once the server
// accepts connections. Call Close to stop it, also after a failed Run.
func (m *Main) Run(ctx context.Context) (err error) {
	cfg := m.Config
	m.Log.Info("starting cove", "version", Version, "config", "\n  "+strings.Join(cfg.Print(), "\n  "))
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return cove.Errorf(cove.Invalid, "could not create the data directory %s: %v", cfg.DataDir, err)
	}
	if m.DB, err = sqlstore.Open(ctx, cfg.DatabaseURL(), m.Log); err != nil {
		return err
	}
	fcfg := fga.Config{Engine: fga.SQLite, URI: filepath.Join(cfg.DataDir, "authz.db"), Logger: m.Log}
	if m.DB.Engine() == "postgres" {
		fcfg = fga.Config{Engine: fga.Postgres, URI: cfg.Database.URL, Logger: m.Log}
	}
	if m.AuthzDB, err = fga.Open(ctx, fcfg); err != nil {
		return err
	}
	m.Authz = authz.New(m.AuthzDB)
	if m.Bus, err = natsbus.Open(ctx, natsbus.Config{
		URL: cfg.NATS.URL, CredsFile: cfg.NATS.CredsFile, AccountSeedFile: cfg.NATS.AccountSeedFile,
		OperatorSeedFile: cfg.NATS.OperatorSeedFile, SystemCredsFile: cfg.NATS.SystemCredsFile,
		AdvertiseURL: cfg.NATS.AdvertiseURL, StreamReplicas: cfg.NATS.StreamReplicas,
		DataDir: filepath.Join(cfg.DataDir, "nats"), Host: cfg.NATS.Host, Port: cfg.NATS.Port, Logger: m.Log,
	}); err != nil {
		return err
	}
	if err := m.Bus.EnsureStreams(ctx); err != nil {
		return err
	}

	key, err := m.signingKey()
	if err != nil {
		return err
	}
	m.signingKeyBytes = key
	a := cfg.Auth
	m.Identity = identity.NewService(sqlstore.NewIdentityStore(m.DB), m.Authz, identity.Config{
		AccessTTL: a.AccessTTL, RefreshTTL: a.RefreshTTL, MaxTokenTTL: a.MaxTokenTTL, OpenSignup: a.OpenSignup,
		Argon2: a.Argon2, SigningKey: key,
		LoginBurstPerEmail: a.LoginBurstPerEmail, LoginBurstPerClient: a.LoginBurstPerClient, LoginRefill: a.LoginRefill,
	}, nil)
	m.Workspace = workspace.NewService(sqlstore.NewWorkspaceStore(m.DB), m.Authz, activeRuns{m}, nil)
	// The SQL store is the source of truth; relations whose write failed
	// after a commit are put back here.
	if err := m.Identity.SyncRelations(ctx); err != nil {
		return err
	}
	if err := m.Workspace.SyncRelations(ctx); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.API = httpapi.New(httpapi.Deps{
		Identity: m.Identity, Workspace: m.Workspace,
		Audit:    &audit.Service{Store: sqlstore.NewAuditStore(m.DB), Authz: m.Authz},
		Ready:    map[string]httpapi.Pinger{"database": m.DB, "nats": pingFunc(m.Bus.Ready)},
		Registry: reg, Log: m.Log, MaxBodyBytes: cfg.HTTP.MaxBodyBytes, Version: Version,
	})

	if err := m.startCA(ctx); err != nil {
		return err
	}
	if err := m.startCatalog(ctx); err != nil {
		return err
	}
	if err := m.startComputations(ctx); err != nil {
		return err
	}
	if err := m.startNodes(ctx); err != nil {
		return err
	}
	if err := m.startDispatch(ctx); err != nil {
		return err
	}

	if cfg.Dev {
		if err := m.seed(ctx); err != nil {
			return err
		}
	}

	if m.ln, err = net.Listen("tcp", cfg.HTTP.Addr); err != nil {
		return cove.Errorf(cove.Unavailable, "could not listen on %s: %v; is another Cove running? pick another with --http-addr", cfg.HTTP.Addr, err)
	}
	scheme := "https://"
	if cfg.HTTP.TLS.Mode == config.TLSOff {
		scheme = "http://"
	}
	local := scheme + m.ln.Addr().String()
	m.URL = local
	if cfg.HTTP.PublicURL != "" {
		m.URL = strings.TrimSuffix(cfg.HTTP.PublicURL, "/")
	}
	// After the listener, so that the server certificate's OCSP and CRL
	// URLs name the address it really has.
	tlsCfg, err := m.listenerTLS(ctx)
	if err != nil {
		return err
	}
	m.http = &http.Server{Handler: m.API, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(m.Log.Handler(), slog.LevelWarn)}
	m.done = make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			m.done <- m.http.ServeTLS(m.ln, "", "")
			return
		}
		m.done <- m.http.Serve(m.ln)
	}()
	if cfg.Dev {
		if err := m.startDevNode(ctx, local); err != nil {
			return err
		}
	}
	// Starting leaves garbage behind (migrations, the authorization model,
	// seeding): hand it back to the OS now rather than over minutes of
	// background scavenging, so an idle server's RSS is what it uses.
	debug.FreeOSMemory()
	fp := m.CA.RootFingerprint()
	m.Log.Info("serving", "url", m.URL, "nats", m.Bus.ClientURL(), "database", m.DB.Engine(), "ca_fingerprint", fp)
	fmt.Fprintf(m.Out, "Cove is running at %s\nCA fingerprint: %s (trust it with --ca-fingerprint, or the chain from `cove ca chain`)\n", m.URL, fp)
	if cfg.Dev {
		trust := ""
		if tlsCfg != nil {
			trust = " --ca-fingerprint " + fp
		}
		fmt.Fprintf(m.Out, "\nDev mode: log in with\n  cove login --server %s%s --email %s\npassword: %s\n(also in %s)\n\n",
			m.URL, trust, DevAdminEmail, m.DevPassword, filepath.Join(cfg.DataDir, devPasswordFile))
	}
	return nil
}

// Close shuts down gracefully: stop taking requests, let running ones end
// (up to 10 s), then close the bus and the stores. Calling it again returns
// the first call's result.
func (m *Main) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.close() })
	return m.closeErr
}

func (m *Main) close() error {
	var errs []error
	if m.http != nil {
		m.API.EndStreams()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.http.Shutdown(ctx); err != nil {
			// Cut off what is still running before the stores close under it.
			_ = m.http.Close()
			errs = append(errs, err)
		}
		if err := <-m.done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	if m.devNode != nil {
		errs = append(errs, m.devNode.Close())
	}
	if m.tlsCert != nil {
		m.tlsCert.stop()
	}
	if m.Dispatch != nil {
		errs = append(errs, m.Dispatch.Close())
	}
	m.closeNodes()
	m.closeCA()
	if m.Bus != nil {
		errs = append(errs, m.Bus.Close())
	}
	if m.AuthzDB != nil {
		errs = append(errs, m.AuthzDB.Close())
	}
	if m.DB != nil {
		errs = append(errs, m.DB.Close())
	}
	return errors.Join(errs...)
}

// signingKey returns the configured token secret, or the one generated in
// the data dir at first start.
func (m *Main) signingKey() ([]byte, error) {
	if s := m.Config.Auth.TokenSecret; s != "" {
		return []byte(s), nil
	}
	path := filepath.Join(m.Config.DataDir, "secrets", "token.key")
	if b, err := os.ReadFile(path); err == nil {
		return hex.DecodeString(strings.TrimSpace(string(b)))
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, cove.Wrap(err, "could not make a token key")
	}
	if err := writeSecret(path, hex.EncodeToString(key)+"\n"); err != nil {
		return nil, err
	}
	return key, nil
}

// writeSecret writes a file only its owner can read, creating it new so
// that two replicas starting at once do not overwrite each other's.
func writeSecret(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return cove.Wrap(err, "could not create "+filepath.Dir(path))
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return cove.Wrap(err, "could not write "+path)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return cove.Wrap(err, "could not write "+path)
	}
	return f.Close()
}

// activeRuns counts a workspace's active runs for the workspace service,
// which is built before the computation service exists.
type activeRuns struct{ m *Main }

func (a activeRuns) CountActiveRuns(ctx context.Context, workspaceID string) (int, error) {
	if a.m.Computations == nil {
		return 0, nil
	}
	return a.m.Computations.CountActiveRuns(ctx, workspaceID)
}

type pingFunc func(context.Context) error

func (f pingFunc) Ping(ctx context.Context) error { return f(ctx) }
