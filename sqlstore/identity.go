package sqlstore

import (
	"context"
	"database/sql"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/identity"
)

// IdentityStore implements identity.Store.
type IdentityStore struct {
	db *DB
	q  querier
}

var _ identity.Store = (*IdentityStore)(nil)

// NewIdentityStore returns the identity store of db.
func NewIdentityStore(db *DB) *IdentityStore { return &IdentityStore{db: db, q: db.stmts} }

// Atomic runs fn in one transaction.
func (s *IdentityStore) Atomic(ctx context.Context, fn func(identity.Store) error) error {
	return s.db.atomic(ctx, s.q, func(tx querier) error { return fn(&IdentityStore{db: s.db, q: tx}) })
}

const userColumns = `id, email, name, password_hash, admin, disabled, created_at, updated_at`

func scanUser(row interface{ Scan(...any) error }) (*identity.User, error) {
	var u identity.User
	err := row.Scan(&u.ID, &u.Email, &u.Name, &u.PasswordHash, &u.Admin, &u.Disabled, &u.CreatedAt, &u.UpdatedAt)
	return &u, err
}

// CreateUser inserts u, claiming platform admin for it when asked and
// nobody has yet.
func (s *IdentityStore) CreateUser(ctx context.Context, u *identity.User, firstAdmin bool) error {
	return s.Atomic(ctx, func(st identity.Store) error {
		q := st.(*IdentityStore).q
		_, err := q.ExecContext(ctx, `INSERT INTO users (`+userColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			u.ID, u.Email, u.Name, u.PasswordHash, u.Admin, u.Disabled, u.CreatedAt, u.UpdatedAt)
		if s.db.engine.unique(err) {
			return cove.Errorf(cove.Conflict, "an account with email %s exists already; log in instead", u.Email).WithDetails(cove.Detail{Field: "email", Message: "taken"})
		} else if err != nil {
			return s.db.fail(err, "could not create the user")
		}
		if !firstAdmin {
			return nil
		}
		res, err := q.ExecContext(ctx, `INSERT INTO admin_claim (id, user_id) VALUES (1, $1) ON CONFLICT (id) DO NOTHING`, u.ID)
		if err != nil {
			return s.db.fail(err, "could not create the user")
		}
		if n, _ := res.RowsAffected(); n == 1 {
			u.Admin = true
			_, err = q.ExecContext(ctx, `UPDATE users SET admin = TRUE WHERE id = $1`, u.ID)
			return s.db.fail(err, "could not create the user")
		}
		return nil
	})
}

// FindUserByID returns a user.
func (s *IdentityStore) FindUserByID(ctx context.Context, id string) (*identity.User, error) {
	u, err := scanUser(s.q.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, id))
	return u, s.db.one(err, "user "+id+" not found")
}

// FindUserByEmail returns the user with a normalized email.
func (s *IdentityStore) FindUserByEmail(ctx context.Context, email string) (*identity.User, error) {
	u, err := scanUser(s.q.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE email = $1`, email))
	return u, s.db.one(err, "no user with email "+email)
}

// FindUsers lists users by ID.
func (s *IdentityStore) FindUsers(ctx context.Context, f identity.UserFilter) ([]*identity.User, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT `+userColumns+` FROM users WHERE id > $1 AND ($2 = '' OR email = $2) ORDER BY id LIMIT $3`,
		f.Page.After, f.Email, f.Page.Limit)
	if err != nil {
		return nil, s.db.fail(err, "could not list users")
	}
	return collect(rows, scanUser)
}

// UpdateUser writes every mutable field of u.
func (s *IdentityStore) UpdateUser(ctx context.Context, u *identity.User) error {
	res, err := s.q.ExecContext(ctx, `UPDATE users SET name = $2, password_hash = $3, admin = $4, disabled = $5, updated_at = $6 WHERE id = $1`,
		u.ID, u.Name, u.PasswordHash, u.Admin, u.Disabled, u.UpdatedAt)
	return s.db.affected(res, err, "user "+u.ID+" not found")
}

// FindAdmins returns the IDs of every platform admin.
func (s *IdentityStore) FindAdmins(ctx context.Context) ([]string, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT id FROM users WHERE admin = TRUE ORDER BY id`)
	if err != nil {
		return nil, s.db.fail(err, "could not list admins")
	}
	return collect(rows, func(r interface{ Scan(...any) error }) (string, error) {
		var id string
		return id, r.Scan(&id)
	})
}

const sessionColumns = `id, user_id, refresh_hash, prev_refresh_hash, refresh_expires_at, created_at, revoked_at`

func scanSession(row interface{ Scan(...any) error }) (*identity.Session, error) {
	var ss identity.Session
	var revoked sql.NullTime
	err := row.Scan(&ss.ID, &ss.UserID, &ss.RefreshHash, &ss.PrevRefreshHash, &ss.RefreshExpiresAt, &ss.CreatedAt, &revoked)
	ss.RevokedAt = timePtr(revoked)
	return &ss, err
}

// CreateSession inserts a session.
func (s *IdentityStore) CreateSession(ctx context.Context, ss *identity.Session) error {
	_, err := s.q.ExecContext(ctx, `INSERT INTO sessions (`+sessionColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		ss.ID, ss.UserID, ss.RefreshHash, ss.PrevRefreshHash, ss.RefreshExpiresAt, ss.CreatedAt, nullTime(ss.RevokedAt))
	return s.db.fail(err, "could not create the session")
}

// FindSessionByID returns a session.
func (s *IdentityStore) FindSessionByID(ctx context.Context, id string) (*identity.Session, error) {
	ss, err := scanSession(s.q.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = $1`, id))
	return ss, s.db.one(err, "session not found")
}

// FindSessionByRefresh finds a session by its current or previous refresh
// digest.
func (s *IdentityStore) FindSessionByRefresh(ctx context.Context, hash string) (*identity.Session, error) {
	ss, err := scanSession(s.q.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE refresh_hash = $1 OR prev_refresh_hash = $1`, hash))
	return ss, s.db.one(err, "session not found")
}

// RotateSession swaps the refresh digest if old is still current.
func (s *IdentityStore) RotateSession(ctx context.Context, id, old, next string, expires time.Time) (bool, error) {
	res, err := s.q.ExecContext(ctx, `UPDATE sessions SET prev_refresh_hash = refresh_hash, refresh_hash = $3, refresh_expires_at = $4
		WHERE id = $1 AND refresh_hash = $2 AND revoked_at IS NULL`, id, old, next, expires)
	if err != nil {
		return false, s.db.fail(err, "could not refresh the session")
	}
	n, err := res.RowsAffected()
	return n == 1, s.db.fail(err, "could not refresh the session")
}

// RevokeSession revokes one session; revoking a revoked one keeps the
// first time.
func (s *IdentityStore) RevokeSession(ctx context.Context, id string, at time.Time) error {
	_, err := s.q.ExecContext(ctx, `UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL`, id, at)
	return s.db.fail(err, "could not end the session")
}

// RevokeSessions revokes every open session of userID but keep.
func (s *IdentityStore) RevokeSessions(ctx context.Context, userID, keep string, at time.Time) error {
	_, err := s.q.ExecContext(ctx, `UPDATE sessions SET revoked_at = $3 WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL`, userID, keep, at)
	return s.db.fail(err, "could not end the sessions")
}

const tokenColumns = `id, user_id, name, prefix, hash, expires_at, last_used_at, revoked_at, created_at`

func scanToken(row interface{ Scan(...any) error }) (*identity.Token, error) {
	var t identity.Token
	var used, revoked sql.NullTime
	err := row.Scan(&t.ID, &t.UserID, &t.Name, &t.Prefix, &t.Hash, &t.ExpiresAt, &used, &revoked, &t.CreatedAt)
	t.LastUsedAt, t.RevokedAt = timePtr(used), timePtr(revoked)
	return &t, err
}

// CreateToken inserts a personal access token.
func (s *IdentityStore) CreateToken(ctx context.Context, t *identity.Token) error {
	_, err := s.q.ExecContext(ctx, `INSERT INTO tokens (`+tokenColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		t.ID, t.UserID, t.Name, t.Prefix, t.Hash, t.ExpiresAt, nullTime(t.LastUsedAt), nullTime(t.RevokedAt), t.CreatedAt)
	return s.db.fail(err, "could not create the token")
}

// FindTokenByHash returns the token with a secret digest.
func (s *IdentityStore) FindTokenByHash(ctx context.Context, hash string) (*identity.Token, error) {
	t, err := scanToken(s.q.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = $1`, hash))
	return t, s.db.one(err, "token not found")
}

// FindTokenByID returns a token.
func (s *IdentityStore) FindTokenByID(ctx context.Context, id string) (*identity.Token, error) {
	t, err := scanToken(s.q.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = $1`, id))
	return t, s.db.one(err, "token "+id+" not found")
}

// FindTokens lists a user's tokens by ID.
func (s *IdentityStore) FindTokens(ctx context.Context, userID string, page cove.Page) ([]*identity.Token, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3`, userID, page.After, page.Limit)
	if err != nil {
		return nil, s.db.fail(err, "could not list tokens")
	}
	return collect(rows, scanToken)
}

// UpdateToken writes a token's use and revocation times.
func (s *IdentityStore) UpdateToken(ctx context.Context, t *identity.Token) error {
	res, err := s.q.ExecContext(ctx, `UPDATE tokens SET last_used_at = $2, revoked_at = $3 WHERE id = $1`, t.ID, nullTime(t.LastUsedAt), nullTime(t.RevokedAt))
	return s.db.affected(res, err, "token "+t.ID+" not found")
}

// RecordAudit appends an audit entry.
func (s *IdentityStore) RecordAudit(ctx context.Context, e audit.Entry) error {
	return recordAudit(ctx, s.db, s.q, e)
}

// collect scans every row with scan.
func collect[T any](rows *sql.Rows, scan func(interface{ Scan(...any) error }) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, cove.Wrap(err, "database error")
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, cove.Wrap(err, "database error")
	}
	return out, nil
}
