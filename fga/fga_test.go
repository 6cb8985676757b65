package fga_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/authz"
	"github.com/covecompute/cove/fga"
	"github.com/covecompute/cove/fga/fgatest"
)

var (
	ws    = authz.Workspace("ws_a")
	alice = authz.User("usr_alice")
	bob   = authz.User("usr_bob")
)

// mustCheck returns the answer of s.Check and fails the test on error.
func mustCheck(tb testing.TB, s authz.Store, subject, relation, object string) bool {
	tb.Helper()
	ok, err := s.Check(context.Background(), subject, relation, object)
	if err != nil {
		tb.Fatalf("Check(%s %s %s): %v", subject, relation, object, err)
	}
	return ok
}

func TestOpenInvalidConfig(t *testing.T) {
	for _, cfg := range []fga.Config{
		{Engine: "mysql", URI: "x"},
		{Engine: fga.SQLite},
		{Engine: fga.Postgres, URI: "::not a url"},
	} {
		if _, err := fga.Open(context.Background(), cfg); cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("Open(%+v) = %v, want invalid", cfg, err)
		}
	}
}

func TestWriteIsIdempotent(t *testing.T) {
	for _, e := range fgatest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			s := fgatest.MustOpen(t, e.Config(t))
			ctx := context.Background()
			grant := authz.NewTuple(alice, authz.Member, ws)

			for i := range 2 {
				if err := s.Write(ctx, []authz.Tuple{grant, grant}, nil); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
			}
			if !mustCheck(t, s, alice, authz.CanWrite, ws) {
				t.Fatal("granted member cannot write")
			}
			for i := range 2 {
				if err := s.Write(ctx, nil, []authz.Tuple{grant}); err != nil {
					t.Fatalf("delete %d: %v", i, err)
				}
			}
			if mustCheck(t, s, alice, authz.CanView, ws) {
				t.Fatal("revoked member can still view")
			}
			if err := s.Write(ctx, nil, nil); err != nil {
				t.Errorf("empty write: %v", err)
			}
		})
	}
}

// TestWriteManyTuples writes more tuples than one OpenFGA request takes.
func TestWriteManyTuples(t *testing.T) {
	for _, e := range fgatest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			s := fgatest.MustOpen(t, e.Config(t))
			ctx := context.Background()
			var members []authz.Tuple
			for i := range 250 {
				members = append(members, authz.NewTuple(authz.User(fmt.Sprintf("usr_%03d", i)), authz.Member, ws))
			}
			if err := s.Write(ctx, members, nil); err != nil {
				t.Fatal(err)
			}
			got, err := s.ListObjects(ctx, authz.User("usr_249"), authz.CanWrite, authz.TypeWorkspace)
			if err != nil || len(got) != 1 {
				t.Fatalf("last member's workspaces = %q, %v", got, err)
			}

			// Swap them all to viewers in one call: 500 changes.
			var viewers []authz.Tuple
			for _, m := range members {
				viewers = append(viewers, authz.NewTuple(m.Subject, authz.Viewer, ws))
			}
			if err := s.Write(ctx, viewers, members); err != nil {
				t.Fatal(err)
			}
			for _, i := range []int{0, 99, 100, 249} {
				u := authz.User(fmt.Sprintf("usr_%03d", i))
				if mustCheck(t, s, u, authz.CanWrite, ws) || !mustCheck(t, s, u, authz.CanView, ws) {
					t.Errorf("%s is not exactly a viewer", u)
				}
			}
		})
	}
}

func TestWriteErrors(t *testing.T) {
	s := fgatest.MustOpenSQLite(t)
	ctx := context.Background()
	grant := authz.NewTuple(alice, authz.Member, ws)
	tests := []struct {
		name            string
		writes, deletes []authz.Tuple
	}{
		{"written and deleted", []authz.Tuple{grant}, []authz.Tuple{grant}},
		{"relation not in model", []authz.Tuple{authz.NewTuple(alice, "janitor", ws)}, nil},
		{"subject type not allowed", []authz.Tuple{authz.NewTuple(alice, authz.Reader, authz.Dataset("ds_a"))}, nil},
		{"malformed object", []authz.Tuple{authz.NewTuple(alice, authz.Member, "ws_a")}, nil},
	}
	for _, tt := range tests {
		if err := s.Write(ctx, tt.writes, tt.deletes); cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("%s: Write = %v, want invalid", tt.name, err)
		}
	}
	// A failed write changes nothing.
	if mustCheck(t, s, alice, authz.CanView, ws) {
		t.Error("a rejected write granted access")
	}
}

func TestCheckErrors(t *testing.T) {
	s := fgatest.MustOpenSQLite(t)
	if _, err := s.Check(context.Background(), alice, authz.CanView, "ws_a"); cove.ErrorCode(err) != cove.Invalid {
		t.Errorf("Check of a malformed object = %v, want invalid", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Check(ctx, alice, authz.CanView, ws); cove.ErrorCode(err) != cove.Unavailable {
		t.Errorf("Check with an ended context = %v, want unavailable", err)
	}
	if _, err := s.ListObjects(ctx, alice, authz.CanView, authz.TypeWorkspace); cove.ErrorCode(err) != cove.Unavailable {
		t.Errorf("ListObjects with an ended context = %v, want unavailable", err)
	}
}

// TestReadYourWrites checks that a grant or a revoke decides the very next
// Check, through the same store and through another one on the same
// database, as another replica would.
func TestReadYourWrites(t *testing.T) {
	for _, e := range fgatest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			cfg := e.Config(t)
			a, b := fgatest.MustOpen(t, cfg), fgatest.MustOpen(t, cfg)
			ctx := context.Background()
			for i := range 20 {
				ds := authz.Dataset(fmt.Sprintf("ds_%d", i))
				grant := []authz.Tuple{authz.NewTuple(ws, authz.ParentWorkspace, ds), authz.NewTuple(alice, authz.Member, ws)}
				if mustCheck(t, a, alice, authz.CanEdit, ds) || mustCheck(t, b, alice, authz.CanEdit, ds) {
					t.Fatalf("round %d: allowed before the grant", i)
				}
				if err := a.Write(ctx, grant, nil); err != nil {
					t.Fatal(err)
				}
				if !mustCheck(t, a, alice, authz.CanEdit, ds) || !mustCheck(t, b, alice, authz.CanEdit, ds) {
					t.Fatalf("round %d: denied right after the grant", i)
				}
				if err := b.Write(ctx, nil, grant[1:]); err != nil {
					t.Fatal(err)
				}
				if mustCheck(t, a, alice, authz.CanEdit, ds) || mustCheck(t, b, alice, authz.CanEdit, ds) {
					t.Fatalf("round %d: allowed right after the revoke", i)
				}
			}
		})
	}
}

// TestChecksDuringWrites checks from many goroutines while grants and
// revokes go on: every answer after a Write returns must match it.
func TestChecksDuringWrites(t *testing.T) {
	s := fgatest.MustOpenSQLite(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fgatest.MustGrant(t, s, authz.NewTuple(ws, authz.ParentWorkspace, authz.Dataset("ds_a")))

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := s.Check(ctx, alice, authz.CanEdit, authz.Dataset("ds_a")); err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		})
	}
	grant := []authz.Tuple{authz.NewTuple(alice, authz.Member, ws)}
	for i := range 50 {
		granted := i%2 == 0
		var err error
		if granted {
			err = s.Write(ctx, grant, nil)
		} else {
			err = s.Write(ctx, nil, grant)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := mustCheck(t, s, alice, authz.CanEdit, authz.Dataset("ds_a")); got != granted {
			t.Fatalf("round %d: Check = %v right after the write, want %v", i, got, granted)
		}
	}
	cancel()
	wg.Wait()
}

// TestReopen restarts the store: tuples stay, and the unchanged model is
// not written again.
func TestReopen(t *testing.T) {
	for _, e := range fgatest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			cfg := e.Config(t)
			ctx := context.Background()
			s, err := fga.Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Write(ctx, []authz.Tuple{authz.NewTuple(alice, authz.Owner, ws)}, nil); err != nil {
				t.Fatal(err)
			}
			model := s.ModelID()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			for i := range 2 {
				s := fgatest.MustOpen(t, cfg)
				if s.ModelID() != model {
					t.Errorf("restart %d: model %s, want %s", i, s.ModelID(), model)
				}
				if !mustCheck(t, s, alice, authz.CanDelete, ws) {
					t.Errorf("restart %d: the owner's tuple is gone", i)
				}
			}
			if stores, models := count(t, cfg); stores != 1 || models != 1 {
				t.Errorf("after restarts: %d stores and %d models, want 1 and 1", stores, models)
			}
		})
	}
}

// TestConcurrentOpen starts replicas together on a new PostgreSQL database:
// they must agree on one store.
func TestConcurrentOpen(t *testing.T) {
	cfg := fgatest.Postgres(t)
	stores := make([]*fga.Store, 4)
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = fga.Open(context.Background(), cfg) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	if err := stores[0].Write(context.Background(), []authz.Tuple{authz.NewTuple(bob, authz.Viewer, ws)}, nil); err != nil {
		t.Fatal(err)
	}
	for i, s := range stores {
		if !mustCheck(t, s, bob, authz.CanView, ws) {
			t.Errorf("replica %d does not see replica 0's grant", i)
		}
	}
	if n, models := count(t, cfg); n != 1 || models != 1 {
		t.Errorf("%d stores and %d models, want 1 and 1", n, models)
	}
}

// TestLogging checks that OpenFGA's routine logging stays out of Cove's
// log: only warnings and errors pass.
func TestLogging(t *testing.T) {
	h := &recorder{}
	cfg := fgatest.SQLite(t)
	cfg.Logger = slog.New(h)
	s := fgatest.MustOpen(t, cfg)
	fgatest.MustGrant(t, s, authz.NewTuple(alice, authz.Member, ws))
	mustCheck(t, s, alice, authz.CanView, ws)
	if _, err := s.Check(context.Background(), alice, "nope", ws); err == nil {
		t.Fatal("a check of an unknown relation passed")
	}
	for _, r := range h.records() {
		if r.Level < slog.LevelWarn {
			t.Errorf("OpenFGA logged %v %q", r.Level, r.Message)
		}
	}
}

// recorder is a slog.Handler that keeps every record, at every level.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *recorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recorder) WithGroup(string) slog.Handler            { return h }

func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r)
	return nil
}

func (h *recorder) records() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.recs...)
}

// count returns how many OpenFGA stores and authorization models the
// database of cfg holds, read straight from OpenFGA's tables.
func count(tb testing.TB, cfg fga.Config) (stores, models int) {
	tb.Helper()
	const q = "SELECT (SELECT count(*) FROM store), (SELECT count(*) FROM authorization_model)"
	ctx := context.Background()
	switch cfg.Engine {
	case fga.SQLite:
		db, err := sql.Open("sqlite", cfg.URI)
		if err != nil {
			tb.Fatal(err)
		}
		defer db.Close()
		if err := db.QueryRowContext(ctx, q).Scan(&stores, &models); err != nil {
			tb.Fatal(err)
		}
	case fga.Postgres:
		conn, err := pgx.Connect(ctx, cfg.URI)
		if err != nil {
			tb.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "SET search_path = "+fga.Schema); err != nil {
			tb.Fatal(err)
		}
		if err := conn.QueryRow(ctx, q).Scan(&stores, &models); err != nil {
			tb.Fatal(err)
		}
	}
	return stores, models
}
