package sqlstore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sqlstore"
)

// BenchmarkFindUser reads one row by primary key, outside and inside a
// transaction: the shape of most queries of the run path, where preparing
// the statement costs SQLite more than running it.
//
//	go test -run XXX -bench BenchmarkFindUser ./sqlstore/
func BenchmarkFindUser(b *testing.B) {
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, filepath.Join(b.TempDir(), "cove.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	s := sqlstore.NewIdentityStore(db)
	u := user(cove.NewID("usr"), "bench@x.io")
	if err := s.CreateUser(ctx, u, true); err != nil {
		b.Fatal(err)
	}
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.FindUserByID(ctx, u.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("atomic", func(b *testing.B) {
		for b.Loop() {
			err := s.Atomic(ctx, func(tx identity.Store) error {
				_, err := tx.FindUserByID(ctx, u.ID)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
