package fga

import (
	"context"
	"database/sql"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/covecompute/cove"
)

// A Check through OpenFGA costs several queries and about a millisecond,
// on every request. OpenFGA's own caches cannot help: they expire on a
// timer, so they answer from before a grant or a revoke, and one replica's
// cache knows nothing of another replica's writes. So the Store remembers
// its own answers, each under the revision of the tuples it was computed
// from: a counter in the database that every Write, on any replica, moves
// on. A Check reads the counter (one indexed row) and uses a remembered
// answer only if the counter has not moved since.
//
// Write bumps the counter before it writes and again after. The bump after
// makes the write visible to every later Check; the bump before bounds the
// harm of a crash between writing and bumping, which only answers computed
// during the write itself could then survive. Open bumps too, so a restart
// after such a crash clears them everywhere. Tuples must therefore be
// written through Store.Write only, never with OpenFGA's own tools.

// maxDecisions bounds the answers kept. When full, the cache starts over:
// simpler than eviction, and a full cache means checks are spread so wide
// that keeping any one answer matters little.
const maxDecisions = 1 << 16

// Statements on Cove's revision table, one row next to OpenFGA's tables.
// They take no parameters, so they read the same in both engines' SQL.
const (
	createRevision = `CREATE TABLE IF NOT EXISTS cove_revision (id INTEGER PRIMARY KEY CHECK (id = 1), revision BIGINT NOT NULL)`
	seedRevision   = `INSERT INTO cove_revision (id, revision) VALUES (1, 0) ON CONFLICT DO NOTHING`
	readRevision   = `SELECT revision FROM cove_revision`
	bumpRevision   = `UPDATE cove_revision SET revision = revision + 1`
)

// counter is the revision counter in one engine's database.
type counter interface {
	read(ctx context.Context) (int64, error)
	bump(ctx context.Context) error
	close()
}

// setUpCounter creates the counter if missing and bumps it.
func setUpCounter(ctx context.Context, exec func(ctx context.Context, query string) error) error {
	for _, q := range []string{createRevision, seedRevision, bumpRevision} {
		if err := exec(ctx, q); err != nil {
			return cove.Wrap(err, "cannot set up the authorization revision")
		}
	}
	return nil
}

// sqlCounter keeps the counter through database/sql, for SQLite.
type sqlCounter struct {
	readStmt, bumpStmt *sql.Stmt
}

func newSQLCounter(ctx context.Context, db *sql.DB) (*sqlCounter, error) {
	err := setUpCounter(ctx, func(ctx context.Context, q string) error {
		_, err := db.ExecContext(ctx, q)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Prepared once: SQLite would otherwise compile them on every Check.
	read, err := db.PrepareContext(ctx, readRevision)
	if err != nil {
		return nil, cove.Wrap(err, "cannot set up the authorization revision")
	}
	bump, err := db.PrepareContext(ctx, bumpRevision)
	if err != nil {
		read.Close()
		return nil, cove.Wrap(err, "cannot set up the authorization revision")
	}
	return &sqlCounter{readStmt: read, bumpStmt: bump}, nil
}

func (c *sqlCounter) read(ctx context.Context) (rev int64, err error) {
	err = c.readStmt.QueryRowContext(ctx).Scan(&rev)
	return rev, err
}

func (c *sqlCounter) bump(ctx context.Context) error {
	_, err := c.bumpStmt.ExecContext(ctx)
	return err
}

func (c *sqlCounter) close() {
	c.readStmt.Close()
	c.bumpStmt.Close()
}

// pgCounter keeps the counter through OpenFGA's pgx pool, which caches
// prepared statements per connection, so a read is one round trip.
type pgCounter struct {
	pool *pgxpool.Pool
}

func newPGCounter(ctx context.Context, pool *pgxpool.Pool) (*pgCounter, error) {
	err := setUpCounter(ctx, func(ctx context.Context, q string) error {
		_, err := pool.Exec(ctx, q)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &pgCounter{pool: pool}, nil
}

func (c *pgCounter) read(ctx context.Context) (rev int64, err error) {
	err = c.pool.QueryRow(ctx, readRevision).Scan(&rev)
	return rev, err
}

func (c *pgCounter) bump(ctx context.Context) error {
	_, err := c.pool.Exec(ctx, bumpRevision)
	return err
}

func (c *pgCounter) close() {}

// decisions remembers Check answers of one revision.
type decisions struct {
	mu       sync.Mutex
	revision int64
	allowed  map[checkKey]bool
}

type checkKey struct {
	subject, relation, object string
}

// get returns the answer remembered for k at revision rev.
func (d *decisions) get(rev int64, k checkKey) (allowed, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if rev != d.revision {
		return false, false
	}
	allowed, ok = d.allowed[k]
	return allowed, ok
}

// put remembers allowed for k, computed at revision rev. An answer from
// before the latest revision seen is dropped; one from a later revision
// replaces everything.
func (d *decisions) put(rev int64, k checkKey, allowed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case rev < d.revision:
		return
	case rev > d.revision || len(d.allowed) >= maxDecisions || d.allowed == nil:
		d.revision = rev
		d.allowed = make(map[checkKey]bool)
	}
	d.allowed[k] = allowed
}
