package sqlstore

import (
	"context"
	"database/sql"
	"sync"
	"time"
)

// maxStmts bounds the statement cache. The stores' queries are a fixed
// set, except for IN lists and LIMITs of varying length: past the bound a
// query is run unprepared, as it would be without the cache.
const maxStmts = 512

// stmtCache is the querier the stores use outside transactions: it
// prepares each query once and keeps the *sql.Stmt, which database/sql
// prepares again on each connection only the first time it runs there.
// Parsing and planning a statement cost SQLite more than running the
// short queries of the run path; PostgreSQL saves a parse per call.
type stmtCache struct {
	db *sql.DB

	mu      sync.RWMutex
	stmts   map[string]*sql.Stmt
	pending map[string]bool // being prepared by prepareLater
	closed  bool
	// background counts prepareLater's goroutines, which close waits
	// for: one still opening a connection when the pool closes would
	// recreate the SQLite file after its owner removed it.
	background sync.WaitGroup
}

var _ querier = (*stmtCache)(nil)

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}, pending: map[string]bool{}}
}

// prepared returns the statement of query, preparing it on first use, or
// nil when it cannot be cached: the caller then runs query directly, which
// also reports a bad query the usual way. No lock is held while preparing:
// it may wait for a free connection.
func (c *stmtCache) prepared(ctx context.Context, query string) *sql.Stmt {
	if st := c.lookup(query); st != nil {
		return st
	}
	if c.full() {
		return nil
	}
	// The statement outlives ctx: a canceled request must not leave a
	// statement that fails every later call.
	st, err := c.db.PrepareContext(context.WithoutCancel(ctx), query)
	if err != nil {
		return nil
	}
	return c.keep(query, st)
}

func (c *stmtCache) lookup(query string) *sql.Stmt {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.stmts[query]
}

func (c *stmtCache) full() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.stmts) >= maxStmts
}

// keep caches st for query unless another caller was first, and returns
// the statement cached.
func (c *stmtCache) keep(query string, st *sql.Stmt) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if had := c.stmts[query]; had != nil {
		_ = st.Close()
		return had
	}
	if c.closed || len(c.stmts) >= maxStmts {
		_ = st.Close()
		return nil
	}
	c.stmts[query] = st
	return st
}

// prepareLater prepares query in the background, once. A transaction
// cannot prepare a cached statement itself: that needs a second
// connection while it holds one, and with every connection held by such
// transactions none would ever be free.
func (c *stmtCache) prepareLater(query string) {
	c.mu.Lock()
	if c.closed || c.pending[query] || c.stmts[query] != nil || len(c.stmts) >= maxStmts {
		c.mu.Unlock()
		return
	}
	c.pending[query] = true
	c.background.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.background.Done()
		ctx, cancel := context.WithTimeout(context.Background(), prepareTimeout)
		defer cancel()
		c.prepared(ctx, query)
		c.mu.Lock()
		delete(c.pending, query)
		c.mu.Unlock()
	}()
}

// prepareTimeout bounds a background prepare waiting for a connection.
const prepareTimeout = 30 * time.Second

func (c *stmtCache) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := c.prepared(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return c.db.ExecContext(ctx, query, args...)
}

func (c *stmtCache) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := c.prepared(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return c.db.QueryContext(ctx, query, args...)
}

func (c *stmtCache) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := c.prepared(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return c.db.QueryRowContext(ctx, query, args...)
}

// close closes every cached statement, once the background prepares
// have ended; those that end after it keep nothing.
func (c *stmtCache) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.background.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.stmts {
		_ = st.Close()
		delete(c.stmts, q)
	}
}

// stmtTx is the querier inside a transaction: it runs the cached
// statements on the transaction's connection, where database/sql reuses
// what is prepared there already.
type stmtTx struct {
	tx    *sql.Tx
	cache *stmtCache
}

var _ querier = stmtTx{}

// stmt returns the cached statement of query on the transaction, or nil
// the first times, until prepareLater has prepared it.
func (t stmtTx) stmt(ctx context.Context, query string) *sql.Stmt {
	if st := t.cache.lookup(query); st != nil {
		return t.tx.StmtContext(ctx, st)
	}
	t.cache.prepareLater(query)
	return nil
}

func (t stmtTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, query, args...)
}

func (t stmtTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, query, args...)
}

func (t stmtTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, query, args...)
}
