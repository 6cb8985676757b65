// Package apptest starts real control planes for tests: app.Main on a free
// port with its own data dir, embedded NATS on a free port (or a real
// external nats-server, UseExternalNATS), and SQLite or a fresh PostgreSQL
// database.
package apptest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"io"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL driver for creating test databases

	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/config"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/natsbus/natstest"
)

// PostgresEnv names the variable holding a PostgreSQL URL tests may create
// databases through.
const PostgresEnv = "COVE_TEST_DATABASE_URL"

// Engine is a database a test suite runs on.
type Engine struct {
	Name string // "sqlite" or "postgres"
	// URL opens a fresh database: empty for SQLite (a file in the data dir).
	URL func(tb testing.TB) string
}

// Engines returns SQLite, and PostgreSQL when COVE_TEST_DATABASE_URL is set,
// so one suite covers both.
func Engines() []Engine {
	es := []Engine{{Name: "sqlite", URL: func(testing.TB) string { return "" }}}
	if os.Getenv(PostgresEnv) != "" {
		es = append(es, Engine{Name: "postgres", URL: NewPostgresDB})
	}
	return es
}

// NewPostgresDB creates an empty database through COVE_TEST_DATABASE_URL,
// drops it when the test ends, and returns its URL. It skips the test when
// the variable is unset.
func NewPostgresDB(tb testing.TB) string {
	tb.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		tb.Skipf("%s is not set; PostgreSQL tests skipped", PostgresEnv)
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		tb.Fatal(err)
	}
	defer admin.Close()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "cove_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		tb.Fatalf("create test database: %v", err)
	}
	tb.Cleanup(func() {
		db, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer db.Close()
		_, _ = db.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// Config returns a configuration for a test server: free ports, a data dir
// under dir, cheap password hashing and generous login limits.
func Config(dir, databaseURL string) config.Config {
	c := config.Default()
	c.DataDir = dir
	c.HTTP.Addr = "127.0.0.1:0"
	// Plain HTTP keeps the many API tests simple; the trust tests turn
	// TLS on (config.TLSAuto), as `cove serve` has it by default.
	c.HTTP.TLS.Mode = config.TLSOff
	// Nodes heartbeat every second, so tests see them and lose them
	// quickly (the default is 5 s).
	c.Node.HeartbeatInterval = time.Second
	c.NATS.Port = -1
	c.Database.URL = databaseURL
	c.Auth.Argon2 = identity.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}
	c.Auth.LoginBurstPerEmail = 1000
	c.Auth.LoginBurstPerClient = 1000
	c.Log.Level = "warn"
	return c
}

// UseExternalNATS starts a real nats-server prepared as `cove nats init`
// does and points c at it, so the control plane manages its account there
// instead of running the embedded server. It skips the test when
// nats-server is not installed.
func UseExternalNATS(tb testing.TB, c *config.Config) {
	tb.Helper()
	n := natstest.StartExternal(tb)
	c.NATS.URL = n.URL
	c.NATS.OperatorSeedFile = n.OperatorSeedFile
	c.NATS.SystemCredsFile = n.SystemCredsFile
	c.NATS.AccountSeedFile = n.AccountSeedFile
}

// Start runs a control plane with cfg until the test ends.
func Start(tb testing.TB, cfg config.Config) *app.Main {
	tb.Helper()
	m := app.NewMain(cfg, logWriter(tb), io.Discard)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		_ = m.Close()
		tb.Fatalf("start control plane: %v", err)
	}
	tb.Cleanup(func() { _ = m.Close() })
	return m
}

// StartEngine runs a control plane on e in a fresh data dir.
func StartEngine(tb testing.TB, e Engine) *app.Main {
	tb.Helper()
	return Start(tb, Config(tb.TempDir(), e.URL(tb)))
}

// logWriter sends the server's log to the test log, so it shows only for
// failing tests. It goes quiet when the test ends: its cleanup is
// registered before the server's, so it runs after the server has closed,
// and stray log lines from goroutines still stopping are dropped instead of
// panicking the test binary.
func logWriter(tb testing.TB) io.Writer {
	w := &tbWriter{tb: tb}
	tb.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

type tbWriter struct {
	tb   testing.TB
	mu   sync.Mutex
	done bool
}

func (w *tbWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
