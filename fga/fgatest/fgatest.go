// Package fgatest opens real authorization stores for tests: SQLite in a
// temporary directory always, and PostgreSQL when COVE_TEST_DATABASE_URL
// names a server, each test in a database of its own. Services test their
// authorization against these, not against a fake, so a test passes only
// if the real model allows what the service does.
package fgatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/covecompute/cove/authz"
	"github.com/covecompute/cove/fga"
)

// DatabaseURLEnv names the environment variable holding the URL of a
// PostgreSQL server that tests may create databases on.
const DatabaseURLEnv = "COVE_TEST_DATABASE_URL"

// Engine is one database engine that tests run against.
type Engine struct {
	Name string
	// Config returns the config of a new, empty store, removed when the test
	// ends. It skips the test when the engine is not available.
	Config func(tb testing.TB) fga.Config
}

// Engines returns every engine tests should cover.
func Engines() []Engine {
	return []Engine{{fga.SQLite, SQLite}, {fga.Postgres, Postgres}}
}

// SQLite returns the config of a new SQLite file in tb.TempDir().
func SQLite(tb testing.TB) fga.Config {
	tb.Helper()
	return fga.Config{Engine: fga.SQLite, URI: filepath.Join(tb.TempDir(), "authz.db")}
}

// Postgres returns the config of a new PostgreSQL database, dropped when the
// test ends. It skips the test when COVE_TEST_DATABASE_URL is unset.
func Postgres(tb testing.TB) fga.Config {
	tb.Helper()
	admin := os.Getenv(DatabaseURLEnv)
	if admin == "" {
		tb.Skipf("PostgreSQL tests skipped: set %s, e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", DatabaseURLEnv)
	}
	u, err := url.Parse(admin)
	if err != nil {
		tb.Fatalf("%s: %v", DatabaseURLEnv, err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "cove_fgatest_" + hex.EncodeToString(b)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		tb.Fatalf("connect to %s: %v", DatabaseURLEnv, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			tb.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return fga.Config{Engine: fga.Postgres, URI: u.String()}
}

// MustOpen opens the store cfg describes and closes it when the test ends.
func MustOpen(tb testing.TB, cfg fga.Config) *fga.Store {
	tb.Helper()
	s, err := fga.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("open authorization store: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// MustOpenSQLite opens a new SQLite store, the usual store for a service's
// unit tests.
func MustOpenSQLite(tb testing.TB) *fga.Store {
	tb.Helper()
	return MustOpen(tb, SQLite(tb))
}

// MustGrant writes tuples and fails the test on error.
func MustGrant(tb testing.TB, s authz.Store, tuples ...authz.Tuple) {
	tb.Helper()
	if err := s.Write(context.Background(), tuples, nil); err != nil {
		tb.Fatalf("grant: %v", err)
	}
}
