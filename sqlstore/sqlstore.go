// Package sqlstore is the SQL adapter: it implements the Store interfaces
// of the domain packages on SQLite (modernc.org/sqlite, pure Go) and on
// PostgreSQL (pgx), through database/sql.
//
// The queries are shared; what differs between the engines is kept behind
// the small engine type: the driver, the DSN, the migrations (embedded per
// engine and applied with goose), and how a unique violation is told apart.
package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/covecompute/cove"
)

//go:embed migrations
var migrations embed.FS

// engine is what differs between SQLite and PostgreSQL.
type engine struct {
	name    string
	driver  string
	dialect goose.Dialect
	unique  func(error) bool
}

var (
	sqliteEngine = engine{name: "sqlite", driver: "sqlite", dialect: goose.DialectSQLite3, unique: func(err error) bool {
		var e *sqlite.Error
		return errors.As(err, &e) && (e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
	}}
	postgresEngine = engine{name: "postgres", driver: "pgx", dialect: goose.DialectPostgres, unique: func(err error) bool {
		var e *pgconn.PgError
		return errors.As(err, &e) && e.Code == "23505"
	}}
)

// DB is an open database with its migrations applied.
type DB struct {
	sql    *sql.DB
	stmts  *stmtCache // what the stores query through
	engine engine
}

// Open opens the database at url and applies pending migrations. url is a
// PostgreSQL URL (postgres:// or postgresql://) or a SQLite file path
// (optionally prefixed with sqlite:// or file:).
func Open(ctx context.Context, url string, log *slog.Logger) (*DB, error) {
	var (
		eng engine
		dsn string
	)
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		eng, dsn = postgresEngine, url
	default:
		path := strings.TrimPrefix(strings.TrimPrefix(url, "sqlite://"), "file:")
		if path == "" {
			return nil, cove.Errorf(cove.Invalid, "the database URL is empty; give a SQLite file path or a postgres:// URL")
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, cove.Wrap(err, "could not create the database directory")
		}
		// WAL lets readers run beside the one writer; immediate transactions
		// take the write lock up front, so two writers queue on the busy
		// timeout instead of failing with SQLITE_BUSY on lock upgrade.
		eng, dsn = sqliteEngine, "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate&_time_format=sqlite"
	}
	db, err := sql.Open(eng.driver, dsn)
	if err != nil {
		return nil, cove.Wrap(err, "could not open the database")
	}
	// Idle connections are kept up to the maximum (database/sql keeps 2 by
	// default): a new connection costs SQLite its pragmas and every
	// statement prepared again, and PostgreSQL a handshake.
	if eng.name == "sqlite" {
		db.SetMaxOpenConns(8)
		db.SetMaxIdleConns(8)
	} else {
		db.SetMaxOpenConns(32)
		db.SetMaxIdleConns(32)
		db.SetConnMaxIdleTime(5 * time.Minute)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, &cove.Error{Code: cove.Unavailable, Message: fmt.Sprintf("could not reach the %s database; check --database-url and that the server is running", eng.name), Err: err}
	}
	d := &DB{sql: db, stmts: newStmtCache(db), engine: eng}
	if err := d.migrate(ctx, log); err != nil {
		db.Close()
		return nil, err
	}
	return d, nil
}

func (d *DB) migrate(ctx context.Context, log *slog.Logger) error {
	fsys, err := fs.Sub(migrations, "migrations/"+d.engine.name)
	if err != nil {
		return cove.Wrap(err, "missing migrations")
	}
	p, err := goose.NewProvider(d.engine.dialect, d.sql, fsys)
	if err != nil {
		return cove.Wrap(err, "could not load migrations")
	}
	results, err := p.Up(ctx)
	if err != nil {
		return cove.Wrap(err, "could not apply database migrations")
	}
	for _, r := range results {
		if log != nil {
			log.Info("applied migration", "engine", d.engine.name, "version", r.Source.Version, "took", r.Duration)
		}
	}
	return nil
}

// Engine returns "sqlite" or "postgres".
func (d *DB) Engine() string { return d.engine.name }

// Ping checks the database answers; /readyz uses it.
func (d *DB) Ping(ctx context.Context) error {
	if err := d.sql.PingContext(ctx); err != nil {
		return &cove.Error{Code: cove.Unavailable, Message: "the database does not answer", Err: err}
	}
	return nil
}

// Close closes the database.
func (d *DB) Close() error {
	d.stmts.close()
	return d.sql.Close()
}

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// atomic runs fn in a transaction, or in q itself when q is already one,
// so that domain services can nest Atomic calls.
func (d *DB) atomic(ctx context.Context, q querier, fn func(querier) error) error {
	if _, ok := q.(stmtTx); ok {
		return fn(q)
	}
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return d.fail(err, "could not start a transaction")
	}
	if err := fn(stmtTx{tx: tx, cache: d.stmts}); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return d.fail(err, "could not commit")
	}
	return nil
}

// fail turns a driver error into a cove error: conflict for a unique
// violation, unavailable for a canceled context, internal otherwise.
func (d *DB) fail(err error, msg string) error {
	switch {
	case err == nil:
		return nil
	case cove.ErrorCode(err) != cove.Internal:
		return err
	case d.engine.unique(err):
		return &cove.Error{Code: cove.Conflict, Message: msg, Err: err}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &cove.Error{Code: cove.Unavailable, Message: "the request was canceled", Err: err}
	default:
		return cove.Wrap(err, "database error")
	}
}

// one maps sql.ErrNoRows to not_found with msg and other errors as fail does.
func (d *DB) one(err error, msg string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return cove.Errorf(cove.NotFound, "%s", msg)
	}
	return d.fail(err, "database error")
}

// affected returns not_found with msg when res changed no row.
func (d *DB) affected(res sql.Result, err error, msg string) error {
	if err != nil {
		return d.fail(err, "database error")
	}
	if n, err := res.RowsAffected(); err != nil {
		return d.fail(err, "database error")
	} else if n == 0 {
		return cove.Errorf(cove.NotFound, "%s", msg)
	}
	return nil
}

// nullTime maps a nil pointer to SQL NULL.
func nullTime(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UTC()
}

// timePtr maps a scanned sql.NullTime back.
func timePtr(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	v := t.Time.UTC()
	return &v
}
