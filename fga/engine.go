package fga

import (
	"context"
	"database/sql"
	"io/fs"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/openfga/openfga/assets"
	"github.com/openfga/openfga/pkg/storage"
	"github.com/openfga/openfga/pkg/storage/postgres"
	"github.com/openfga/openfga/pkg/storage/sqlcommon"
	"github.com/openfga/openfga/pkg/storage/sqlite"
	"github.com/pressly/goose/v3"

	"github.com/covecompute/cove"
)

// bootstrapLock is the PostgreSQL advisory lock that replicas take while
// they migrate and install the model, so two of them starting together do
// not create two stores. Any constant would do; this one is "cove-fga" in
// ASCII, far from goose's default.
const bootstrapLock int64 = 0x636f76652d666761

// database is an opened and migrated engine.
type database struct {
	ds       storage.OpenFGADatastore
	revision counter // in the same database; close it before ds
	// unlock lets other replicas start. Call it before closing anything.
	unlock func()
}

// openSQLite opens the SQLite file uri and migrates it. A SQLite file has
// one process serving it, so there is nothing to lock.
func openSQLite(ctx context.Context, uri string, cfg *sqlcommon.Config) (*database, error) {
	dsn, err := sqlite.PrepareDSN(sqliteDSN(uri))
	if err != nil {
		return nil, cove.Errorf(cove.Invalid, "the authorization store URI %q is not a SQLite file name", uri)
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, cove.Wrap(err, "cannot open the authorization database")
	}
	if err := migrate(ctx, goose.DialectSQLite3, db, assets.SqliteMigrationDir); err != nil {
		db.Close()
		return nil, err
	}
	rev, err := newSQLCounter(ctx, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	ds, err := sqlite.NewWithDB(db, cfg)
	if err != nil {
		rev.close()
		db.Close()
		return nil, cove.Wrap(err, "cannot open the authorization database")
	}
	return &database{ds: ds, revision: rev, unlock: func() {}}, nil
}

// sqliteDSN waits up to 5s for a lock, as OpenFGA's 100ms default turns a
// brief burst of writes into errors.
func sqliteDSN(uri string) string {
	if strings.Contains(uri, "busy_timeout") {
		return uri
	}
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	return uri + sep + "_pragma=" + url.QueryEscape("busy_timeout(5000)")
}

// openPostgres connects to the PostgreSQL URL uri with OpenFGA's tables in
// Schema, creating it, and migrates. It returns holding bootstrapLock, for
// the caller to release with database.unlock once the store is set up.
func openPostgres(ctx context.Context, uri string, cfg *sqlcommon.Config) (*database, error) {
	pcfg, err := pgxpool.ParseConfig(uri)
	if err != nil {
		return nil, cove.Errorf(cove.Invalid, "the authorization store URI is not a PostgreSQL URL")
	}
	// Every connection, OpenFGA's and the migrations', resolves unqualified
	// table names in Schema alone, so OpenFGA's "store" or "tuple" tables
	// never meet Cove's.
	pcfg.ConnConfig.RuntimeParams["search_path"] = Schema
	// pgx's default pool, four connections on a small host, starves
	// OpenFGA, which reads the branches of a check in parallel. Use the
	// OpenFGA server's default unless the URL sets one.
	if !strings.Contains(uri, "pool_max_conns") {
		pcfg.MaxConns = 30
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, cove.Wrap(err, "cannot connect to the authorization database")
	}

	conn, err := pool.Acquire(ctx)
	if err != nil {
		pool.Close()
		return nil, &cove.Error{Code: cove.Unavailable, Message: "cannot connect to the authorization database", Err: err}
	}
	unlock := func() {
		// A new context: the lock must go even when ctx has ended.
		_, _ = conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", bootstrapLock)
		conn.Release()
	}
	fail := func(err error) (*database, error) {
		unlock()
		pool.Close()
		return nil, err
	}
	if err := lock(ctx, conn); err != nil {
		return fail(err)
	}
	// Creating a schema needs the CREATE privilege on the database even when
	// it exists, so ask first: a role without it can run on a prepared schema.
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", Schema).Scan(&exists); err != nil {
		return fail(cove.Wrap(err, "cannot read the authorization database"))
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{Schema}.Sanitize()); err != nil {
			return fail(cove.Wrap(err, "cannot create the authorization schema"))
		}
	}

	db := stdlib.OpenDBFromPool(pool)
	err = migrate(ctx, goose.DialectPostgres, db, assets.PostgresMigrationDir)
	db.Close() // leaves the pool open
	if err != nil {
		return fail(err)
	}
	rev, err := newPGCounter(ctx, pool)
	if err != nil {
		return fail(err)
	}
	ds, err := postgres.NewWithDB(pool, nil, cfg)
	if err != nil {
		return fail(cove.Wrap(err, "cannot open the authorization database"))
	}
	return &database{ds: ds, revision: rev, unlock: unlock}, nil
}

// lock takes bootstrapLock on conn. It polls rather than waits in
// pg_advisory_lock: a waiting replica would sit in an open transaction, and
// OpenFGA's migration 006 (CREATE INDEX CONCURRENTLY) waits for every open
// transaction in the database, so the replica holding the lock would wait
// for the replicas waiting for it, for ever.
func lock(ctx context.Context, conn *pgxpool.Conn) error {
	for {
		var locked bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", bootstrapLock).Scan(&locked); err != nil {
			return &cove.Error{Code: cove.Unavailable, Message: "cannot lock the authorization database", Err: err}
		}
		if locked {
			return nil
		}
		select {
		case <-ctx.Done():
			return &cove.Error{Code: cove.Unavailable, Message: "another replica held the authorization database too long", Err: ctx.Err()}
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// migrate runs OpenFGA's migrations for dialect from the files it ships.
// It uses a goose provider rather than OpenFGA's migrate.RunMigrations,
// which sets goose's package globals (and so races with any other goose
// user in the process) and cannot share a connection pool. The version
// table keeps goose's default name, so OpenFGA's own "openfga migrate"
// still understands the database.
func migrate(ctx context.Context, dialect goose.Dialect, db *sql.DB, dir string) error {
	files, err := fs.Sub(assets.EmbedMigrations, dir)
	if err != nil {
		return cove.Wrap(err, "cannot find the authorization migrations")
	}
	p, err := goose.NewProvider(dialect, db, files, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return cove.Wrap(err, "cannot load the authorization migrations")
	}
	if _, err := p.Up(ctx); err != nil {
		return cove.Wrap(err, "cannot migrate the authorization database")
	}
	return nil
}
