// Package sdktest starts a real Cove API server for the tests of the SDK
// and the CLI: the real services over SQLite and an embedded OpenFGA in a
// temporary directory, served by the real httpapi handler. Nothing is
// faked, so a test passes only if the server really behaves as the client
// expects.
package sdktest

import (
	"context"
	"crypto/rand"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/authz"
	"github.com/covecompute/cove/fga"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sqlstore"
	"github.com/covecompute/cove/workspace"
)

// NewServer starts an API server with open signup, one-minute access
// tokens and cheap password hashing, and stops it when the test ends. The
// first account signed up on it becomes platform admin.
func NewServer(tb testing.TB) *httptest.Server {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()

	db, err := sqlstore.Open(ctx, filepath.Join(dir, "cove.db"), nil)
	if err != nil {
		tb.Fatalf("open database: %v", err)
	}
	tb.Cleanup(func() { _ = db.Close() })

	store, err := fga.Open(ctx, fga.Config{Engine: fga.SQLite, URI: filepath.Join(dir, "authz.db")})
	if err != nil {
		tb.Fatalf("open authorization store: %v", err)
	}
	tb.Cleanup(func() { _ = store.Close() })
	az := authz.New(store)

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	ids := identity.NewService(sqlstore.NewIdentityStore(db), az, identity.Config{
		AccessTTL:           time.Minute,
		RefreshTTL:          time.Hour,
		MaxTokenTTL:         24 * time.Hour,
		OpenSignup:          true,
		Argon2:              identity.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1},
		SigningKey:          key,
		LoginBurstPerEmail:  100,
		LoginBurstPerClient: 100,
		LoginRefill:         time.Second,
	}, nil)
	wss := workspace.NewService(sqlstore.NewWorkspaceStore(db), az, nil, nil)
	aud := &audit.Service{Store: sqlstore.NewAuditStore(db), Authz: az}

	srv := httptest.NewServer(httpapi.New(httpapi.Deps{
		Identity:  ids,
		Workspace: wss,
		Audit:     aud,
		Ready:     map[string]httpapi.Pinger{"database": db},
		Version:   "test",
	}))
	tb.Cleanup(srv.Close)
	return srv
}
