package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/node"
)

// NodeStore implements node.Store.
type NodeStore struct {
	db *DB
	q  querier
}

var _ node.Store = (*NodeStore)(nil)

// NewNodeStore returns the node store of db.
func NewNodeStore(db *DB) *NodeStore { return &NodeStore{db: db, q: db.stmts} }

// Atomic runs fn in one transaction.
func (s *NodeStore) Atomic(ctx context.Context, fn func(node.Store) error) error {
	return s.db.atomic(ctx, s.q, func(tx querier) error { return fn(&NodeStore{db: s.db, q: tx}) })
}

// nullWorkspace stores a platform node's or token's empty workspace as
// NULL, which the foreign key lets through.
func nullWorkspace(id string) any {
	if id == "" {
		return nil
	}
	return id
}

const nodeColumns = `id, name, workspace_id, cpus, memory_bytes, disk_bytes, drivers, labels, tee, enroll_token_id, draining,
	approved_at, approved_by, last_seen_at, lost_at, credential_expires_at, created_at, updated_at,
	nats_user, certificate_serial, certificate_expires_at, revoked_at`

func scanNode(r interface{ Scan(...any) error }) (*node.Node, error) {
	var (
		n                    node.Node
		ws                   sql.NullString
		drivers, labels      string
		approved, seen, lost sql.NullTime
		certExp, revoked     sql.NullTime
	)
	err := r.Scan(&n.ID, &n.Name, &ws, &n.Capacity.CPUs, &n.Capacity.MemoryBytes, &n.Capacity.DiskBytes, &drivers, &labels, &n.TEE,
		&n.EnrollTokenID, &n.Draining, &approved, &n.ApprovedBy, &seen, &lost, &n.CredentialExpiresAt, &n.CreatedAt, &n.UpdatedAt,
		&n.NATSUser, &n.CertificateSerial, &certExp, &revoked)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(drivers), &n.Drivers); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(labels), &n.Labels); err != nil {
		return nil, err
	}
	n.WorkspaceID = ws.String
	n.ApprovedAt, n.LastSeenAt, n.LostAt = timePtr(approved), timePtr(seen), timePtr(lost)
	n.CertificateExpiresAt, n.RevokedAt = timePtr(certExp), timePtr(revoked)
	n.CredentialExpiresAt, n.CreatedAt, n.UpdatedAt = n.CredentialExpiresAt.UTC(), n.CreatedAt.UTC(), n.UpdatedAt.UTC()
	return &n, nil
}

// CreateNode inserts n.
func (s *NodeStore) CreateNode(ctx context.Context, n *node.Node) error {
	drivers, err := json.Marshal(n.Drivers)
	if err != nil {
		return cove.Wrap(err, "could not encode the drivers")
	}
	labels, err := json.Marshal(n.Labels)
	if err != nil {
		return cove.Wrap(err, "could not encode the labels")
	}
	_, err = s.q.ExecContext(ctx, `INSERT INTO nodes (`+nodeColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)`,
		n.ID, n.Name, nullWorkspace(n.WorkspaceID), n.Capacity.CPUs, n.Capacity.MemoryBytes, n.Capacity.DiskBytes, string(drivers), string(labels), n.TEE,
		n.EnrollTokenID, n.Draining, nullTime(n.ApprovedAt), n.ApprovedBy, nullTime(n.LastSeenAt), nullTime(n.LostAt),
		n.CredentialExpiresAt.UTC(), n.CreatedAt.UTC(), n.UpdatedAt.UTC(),
		n.NATSUser, n.CertificateSerial, nullTime(n.CertificateExpiresAt), nullTime(n.RevokedAt))
	return s.db.fail(err, "could not create the node")
}

// FindNodeByID returns a node.
func (s *NodeStore) FindNodeByID(ctx context.Context, id string) (*node.Node, error) {
	n, err := scanNode(s.q.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE id = $1`, id))
	return n, s.db.one(err, "node "+id+" not found")
}

// stateWhere is the condition that selects nodes in a state.
var stateWhere = map[node.State]string{
	node.Revoked:  `revoked_at IS NOT NULL`,
	node.Pending:  `revoked_at IS NULL AND approved_at IS NULL`,
	node.Lost:     `revoked_at IS NULL AND approved_at IS NOT NULL AND lost_at IS NOT NULL`,
	node.Draining: `revoked_at IS NULL AND approved_at IS NOT NULL AND lost_at IS NULL AND draining`,
	node.Active:   `revoked_at IS NULL AND approved_at IS NOT NULL AND lost_at IS NULL AND NOT draining`,
}

// FindNodes lists nodes by ID.
func (s *NodeStore) FindNodes(ctx context.Context, f node.Filter) ([]*node.Node, error) {
	args := []any{f.Page.After}
	where := []string{`id > $1`}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.WorkspaceID != "" {
		where = append(where, `workspace_id = `+arg(f.WorkspaceID))
	}
	if f.IDs != nil {
		if len(f.IDs) == 0 {
			return nil, nil
		}
		ps := make([]string, len(f.IDs))
		for i, id := range f.IDs {
			ps[i] = arg(id)
		}
		where = append(where, `id IN (`+strings.Join(ps, ", ")+`)`)
	}
	if f.State != "" {
		where = append(where, stateWhere[f.State])
	}
	limit := f.Page.Limit
	if limit <= 0 {
		limit = cove.DefaultPageLimit
	}
	rows, err := s.q.QueryContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE `+strings.Join(where, " AND ")+` ORDER BY id LIMIT `+arg(limit), args...)
	if err != nil {
		return nil, s.db.fail(err, "could not list nodes")
	}
	return collect(rows, scanNode)
}

// UpdateNode writes a node's approval and draining.
func (s *NodeStore) UpdateNode(ctx context.Context, n *node.Node) error {
	res, err := s.q.ExecContext(ctx, `UPDATE nodes SET draining = $2, approved_at = $3, approved_by = $4, updated_at = $5 WHERE id = $1`,
		n.ID, n.Draining, nullTime(n.ApprovedAt), n.ApprovedBy, n.UpdatedAt.UTC())
	return s.db.affected(res, err, "node "+n.ID+" not found")
}

// MarkNodeSeen records a heartbeat.
func (s *NodeStore) MarkNodeSeen(ctx context.Context, id string, at time.Time) error {
	res, err := s.q.ExecContext(ctx, `UPDATE nodes SET last_seen_at = $2, lost_at = NULL WHERE id = $1`, id, at.UTC())
	return s.db.affected(res, err, "node "+id+" not found")
}

// seenChunk bounds the IDs of one MarkNodesSeen statement, well under
// the bind-parameter limits of both engines.
const seenChunk = 500

// MarkNodesSeen records the heartbeats of many nodes in a few statements:
// the node registry writes last_seen_at in batches, not per heartbeat.
func (s *NodeStore) MarkNodesSeen(ctx context.Context, ids []string, at time.Time) error {
	return s.Atomic(ctx, func(st node.Store) error {
		q := st.(*NodeStore).q
		for len(ids) > 0 {
			chunk := ids[:min(seenChunk, len(ids))]
			ids = ids[len(chunk):]
			var b strings.Builder
			b.WriteString(`UPDATE nodes SET last_seen_at = $1 WHERE id IN (`)
			args := make([]any, 0, len(chunk)+1)
			args = append(args, at.UTC())
			for i, id := range chunk {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString("$" + strconv.Itoa(i+2))
				args = append(args, id)
			}
			b.WriteByte(')')
			if _, err := q.ExecContext(ctx, b.String(), args...); err != nil {
				return s.db.fail(err, "database error")
			}
		}
		return nil
	})
}

// MarkNodeLost records that a node went silent.
func (s *NodeStore) MarkNodeLost(ctx context.Context, id string, at time.Time) error {
	res, err := s.q.ExecContext(ctx, `UPDATE nodes SET lost_at = $2 WHERE id = $1`, id, at.UTC())
	return s.db.affected(res, err, "node "+id+" not found")
}

// SetNodeCertificate records a node's new certificate and credential expiry.
func (s *NodeStore) SetNodeCertificate(ctx context.Context, id, serial string, certExpires, credExpires time.Time) error {
	res, err := s.q.ExecContext(ctx, `UPDATE nodes SET certificate_serial = $2, certificate_expires_at = $3, credential_expires_at = $4 WHERE id = $1`,
		id, serial, certExpires.UTC(), credExpires.UTC())
	return s.db.affected(res, err, "node "+id+" not found")
}

// MarkNodeRevoked records that a node's certificate was revoked; the first
// time counts.
func (s *NodeStore) MarkNodeRevoked(ctx context.Context, id string, at time.Time) error {
	res, err := s.q.ExecContext(ctx, `UPDATE nodes SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1`, id, at.UTC())
	return s.db.affected(res, err, "node "+id+" not found")
}

// DeleteNode deletes a node.
func (s *NodeStore) DeleteNode(ctx context.Context, id string) error {
	res, err := s.q.ExecContext(ctx, `DELETE FROM nodes WHERE id = $1`, id)
	return s.db.affected(res, err, "node "+id+" not found")
}

const enrollTokenColumns = `id, workspace_id, token_hash, auto_approve, created_by, expires_at, used_at, node_id, revoked_at, created_at`

func scanEnrollToken(r interface{ Scan(...any) error }) (*node.EnrollToken, error) {
	var (
		t          node.EnrollToken
		ws         sql.NullString
		used, revk sql.NullTime
	)
	err := r.Scan(&t.ID, &ws, &t.TokenHash, &t.AutoApprove, &t.CreatedBy, &t.ExpiresAt, &used, &t.NodeID, &revk, &t.CreatedAt)
	t.WorkspaceID, t.UsedAt, t.RevokedAt = ws.String, timePtr(used), timePtr(revk)
	t.ExpiresAt, t.CreatedAt = t.ExpiresAt.UTC(), t.CreatedAt.UTC()
	return &t, err
}

// CreateEnrollToken inserts a token.
func (s *NodeStore) CreateEnrollToken(ctx context.Context, t *node.EnrollToken) error {
	_, err := s.q.ExecContext(ctx, `INSERT INTO node_enroll_tokens (`+enrollTokenColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		t.ID, nullWorkspace(t.WorkspaceID), t.TokenHash, t.AutoApprove, t.CreatedBy, t.ExpiresAt.UTC(), nullTime(t.UsedAt), t.NodeID, nullTime(t.RevokedAt), t.CreatedAt.UTC())
	return s.db.fail(err, "could not create the enrollment token")
}

// FindEnrollTokenByID returns a token.
func (s *NodeStore) FindEnrollTokenByID(ctx context.Context, id string) (*node.EnrollToken, error) {
	t, err := scanEnrollToken(s.q.QueryRowContext(ctx, `SELECT `+enrollTokenColumns+` FROM node_enroll_tokens WHERE id = $1`, id))
	return t, s.db.one(err, "enrollment token "+id+" not found")
}

// FindEnrollTokenByHash returns the token with a secret's digest.
func (s *NodeStore) FindEnrollTokenByHash(ctx context.Context, hash string) (*node.EnrollToken, error) {
	t, err := scanEnrollToken(s.q.QueryRowContext(ctx, `SELECT `+enrollTokenColumns+` FROM node_enroll_tokens WHERE token_hash = $1`, hash))
	return t, s.db.one(err, "enrollment token not found")
}

// FindEnrollTokens lists the tokens of a workspace, or the platform's.
func (s *NodeStore) FindEnrollTokens(ctx context.Context, workspaceID string, page cove.Page) ([]*node.EnrollToken, error) {
	scope := `workspace_id = $1`
	if workspaceID == "" {
		scope = `workspace_id IS NULL AND $1 = ''`
	}
	rows, err := s.q.QueryContext(ctx, `SELECT `+enrollTokenColumns+` FROM node_enroll_tokens WHERE `+scope+` AND id > $2 ORDER BY id LIMIT $3`,
		workspaceID, page.After, page.Limit)
	if err != nil {
		return nil, s.db.fail(err, "could not list enrollment tokens")
	}
	return collect(rows, scanEnrollToken)
}

// UseEnrollToken marks a usable token used, and is conflict for any other.
func (s *NodeStore) UseEnrollToken(ctx context.Context, id, nodeID string, at time.Time) error {
	res, err := s.q.ExecContext(ctx, `UPDATE node_enroll_tokens SET used_at = $3, node_id = $2
		WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $3`, id, nodeID, at.UTC())
	if err := s.db.affected(res, err, "enrollment token "+id+" not found"); cove.ErrorCode(err) == cove.NotFound {
		return cove.Errorf(cove.Conflict, "enrollment token %s is used, revoked or expired", id)
	} else if err != nil {
		return err
	}
	return nil
}

// RevokeEnrollToken marks a token revoked, keeping the first revocation.
func (s *NodeStore) RevokeEnrollToken(ctx context.Context, id string, at time.Time) error {
	res, err := s.q.ExecContext(ctx, `UPDATE node_enroll_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1`, id, at.UTC())
	return s.db.affected(res, err, "enrollment token "+id+" not found")
}

// RecordAudit appends an audit entry in the store's transaction.
func (s *NodeStore) RecordAudit(ctx context.Context, e audit.Entry) error {
	return recordAudit(ctx, s.db, s.q, e)
}
