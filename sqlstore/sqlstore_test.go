package sqlstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sqlstore"
)

// engines returns a fresh database URL per engine.
func engines(t *testing.T) map[string]string {
	urls := map[string]string{"sqlite": filepath.Join(t.TempDir(), "cove.db")}
	for _, e := range apptest.Engines() {
		if e.Name == "postgres" {
			urls["postgres"] = e.URL(t)
		}
	}
	return urls
}

func mustOpen(t *testing.T, url string) *sqlstore.DB {
	t.Helper()
	db, err := sqlstore.Open(context.Background(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func user(id, email string) *identity.User {
	now := time.Now().UTC().Truncate(time.Microsecond)
	return &identity.User{ID: id, Email: email, Name: "n", PasswordHash: "h", CreatedAt: now, UpdatedAt: now}
}

func TestStore(t *testing.T) {
	for name, url := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db := mustOpen(t, url)
			if db.Engine() != name {
				t.Fatalf("engine %s, want %s", db.Engine(), name)
			}
			// Opening again applies nothing and keeps the data.
			s := sqlstore.NewIdentityStore(db)
			if err := s.CreateUser(ctx, user(cove.NewID("usr"), "a@x.io"), true); err != nil {
				t.Fatal(err)
			}
			db2 := mustOpen(t, url)
			if _, err := sqlstore.NewIdentityStore(db2).FindUserByEmail(ctx, "a@x.io"); err != nil {
				t.Fatalf("reopen: %v", err)
			}

			// Error codes.
			if err := s.CreateUser(ctx, user(cove.NewID("usr"), "a@x.io"), false); cove.ErrorCode(err) != cove.Conflict {
				t.Fatalf("duplicate email: %v", err)
			}
			if _, err := s.FindUserByID(ctx, "usr_none"); cove.ErrorCode(err) != cove.NotFound {
				t.Fatalf("missing user: %v", err)
			}
			if err := s.UpdateUser(ctx, user("usr_none", "b@x.io")); cove.ErrorCode(err) != cove.NotFound {
				t.Fatalf("update missing user: %v", err)
			}
			canceled, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := s.FindUserByID(canceled, "usr_none"); cove.ErrorCode(err) != cove.Unavailable {
				t.Fatalf("canceled context: %v", err)
			}

			// A failed transaction leaves nothing.
			err := s.Atomic(ctx, func(tx identity.Store) error {
				if err := tx.CreateUser(ctx, user(cove.NewID("usr"), "rollback@x.io"), false); err != nil {
					return err
				}
				return cove.Errorf(cove.Invalid, "stop")
			})
			if cove.ErrorCode(err) != cove.Invalid {
				t.Fatalf("atomic: %v", err)
			}
			if _, err := s.FindUserByEmail(ctx, "rollback@x.io"); cove.ErrorCode(err) != cove.NotFound {
				t.Fatalf("rolled back user exists: %v", err)
			}

			// Concurrent writers queue instead of failing with "database is locked".
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for i := range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- s.Atomic(ctx, func(tx identity.Store) error {
						if err := tx.CreateUser(ctx, user(cove.NewID("usr"), fmt.Sprintf("w%d@x.io", i)), false); err != nil {
							return err
						}
						return tx.RecordAudit(ctx, audit.Entry{ID: cove.NewID("aud"), Time: time.Now(), Action: "test", Outcome: audit.Success})
					})
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatalf("concurrent write: %v", err)
				}
			}
			es, err := sqlstore.NewAuditStore(db).FindAudit(ctx, audit.Filter{Action: "test", Page: cove.Page{Limit: 100}})
			if err != nil || len(es) != 64 {
				t.Fatalf("audit entries: %d %v", len(es), err)
			}
			for i := 1; i < len(es); i++ {
				if es[i-1].ID <= es[i].ID {
					t.Fatal("audit log is not newest first")
				}
			}
		})
	}
}

func TestOpenRejectsBadURLs(t *testing.T) {
	ctx := context.Background()
	if _, err := sqlstore.Open(ctx, "", nil); cove.ErrorCode(err) != cove.Invalid {
		t.Fatalf("empty URL: %v", err)
	}
	if _, err := sqlstore.Open(ctx, "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1", nil); cove.ErrorCode(err) != cove.Unavailable {
		t.Fatalf("unreachable PostgreSQL: %v", err)
	}
}
