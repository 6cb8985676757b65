package sqlstore

import (
	"context"
	"database/sql"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/workspace"
)

// WorkspaceStore implements workspace.Store.
type WorkspaceStore struct {
	db *DB
	q  querier
}

var _ workspace.Store = (*WorkspaceStore)(nil)

// NewWorkspaceStore returns the workspace store of db.
func NewWorkspaceStore(db *DB) *WorkspaceStore { return &WorkspaceStore{db: db, q: db.stmts} }

// Atomic runs fn in one transaction.
func (s *WorkspaceStore) Atomic(ctx context.Context, fn func(workspace.Store) error) error {
	return s.db.atomic(ctx, s.q, func(tx querier) error { return fn(&WorkspaceStore{db: s.db, q: tx}) })
}

// CreateWorkspace inserts w.
func (s *WorkspaceStore) CreateWorkspace(ctx context.Context, w *workspace.Workspace) error {
	_, err := s.q.ExecContext(ctx, `INSERT INTO workspaces (id, name, created_at, updated_at) VALUES ($1, $2, $3, $4)`, w.ID, w.Name, w.CreatedAt, w.UpdatedAt)
	return s.db.fail(err, "could not create the workspace")
}

// FindWorkspaceByID returns a workspace.
func (s *WorkspaceStore) FindWorkspaceByID(ctx context.Context, id string) (*workspace.Workspace, error) {
	var w workspace.Workspace
	err := s.q.QueryRowContext(ctx, `SELECT id, name, created_at, updated_at FROM workspaces WHERE id = $1`, id).Scan(&w.ID, &w.Name, &w.CreatedAt, &w.UpdatedAt)
	return &w, s.db.one(err, "workspace "+id+" not found")
}

// FindWorkspacesOf lists the workspaces of a member.
func (s *WorkspaceStore) FindWorkspacesOf(ctx context.Context, userID string, page cove.Page) ([]*workspace.Workspace, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT w.id, w.name, w.created_at, w.updated_at, m.role FROM members m JOIN workspaces w ON w.id = m.workspace_id
		WHERE m.user_id = $1 AND w.id > $2 ORDER BY w.id LIMIT $3`, userID, page.After, page.Limit)
	if err != nil {
		return nil, s.db.fail(err, "could not list workspaces")
	}
	return collect(rows, func(r interface{ Scan(...any) error }) (*workspace.Workspace, error) {
		var w workspace.Workspace
		err := r.Scan(&w.ID, &w.Name, &w.CreatedAt, &w.UpdatedAt, &w.Role)
		return &w, err
	})
}

// UpdateWorkspace writes a workspace's name.
func (s *WorkspaceStore) UpdateWorkspace(ctx context.Context, w *workspace.Workspace) error {
	res, err := s.q.ExecContext(ctx, `UPDATE workspaces SET name = $2, updated_at = $3 WHERE id = $1`, w.ID, w.Name, w.UpdatedAt)
	return s.db.affected(res, err, "workspace "+w.ID+" not found")
}

// LockWorkspace locks the workspace row on PostgreSQL. SQLite transactions
// here are immediate, so they already exclude each other.
func (s *WorkspaceStore) LockWorkspace(ctx context.Context, id string) error {
	if s.db.engine.name != "postgres" {
		return nil
	}
	var got string
	err := s.q.QueryRowContext(ctx, `SELECT id FROM workspaces WHERE id = $1 FOR UPDATE`, id).Scan(&got)
	return s.db.one(err, "workspace "+id+" not found")
}

// DeleteWorkspace deletes a workspace; members and invitations cascade.
func (s *WorkspaceStore) DeleteWorkspace(ctx context.Context, id string) error {
	res, err := s.q.ExecContext(ctx, `DELETE FROM workspaces WHERE id = $1`, id)
	return s.db.affected(res, err, "workspace "+id+" not found")
}

// PutMember creates or updates a membership.
func (s *WorkspaceStore) PutMember(ctx context.Context, wsID, userID string, role workspace.Role, at time.Time) error {
	_, err := s.q.ExecContext(ctx, `INSERT INTO members (workspace_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role`, wsID, userID, string(role), at)
	return s.db.fail(err, "could not save the membership")
}

const memberSelect = `SELECT m.workspace_id, m.user_id, u.email, u.name, m.role, m.created_at FROM members m JOIN users u ON u.id = m.user_id`

func scanMember(r interface{ Scan(...any) error }) (*workspace.MemberInfo, error) {
	var m workspace.MemberInfo
	err := r.Scan(&m.WorkspaceID, &m.UserID, &m.Email, &m.Name, &m.Role, &m.CreatedAt)
	return &m, err
}

// FindMember returns one membership.
func (s *WorkspaceStore) FindMember(ctx context.Context, wsID, userID string) (*workspace.MemberInfo, error) {
	m, err := scanMember(s.q.QueryRowContext(ctx, memberSelect+` WHERE m.workspace_id = $1 AND m.user_id = $2`, wsID, userID))
	return m, s.db.one(err, "not a member")
}

// FindMembers lists a workspace's members by user ID.
func (s *WorkspaceStore) FindMembers(ctx context.Context, wsID string, page cove.Page) ([]*workspace.MemberInfo, error) {
	rows, err := s.q.QueryContext(ctx, memberSelect+` WHERE m.workspace_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3`, wsID, page.After, page.Limit)
	if err != nil {
		return nil, s.db.fail(err, "could not list members")
	}
	return collect(rows, scanMember)
}

// FindAllMembers calls fn for every membership.
func (s *WorkspaceStore) FindAllMembers(ctx context.Context, fn func(*workspace.MemberInfo) error) error {
	rows, err := s.q.QueryContext(ctx, memberSelect+` ORDER BY m.workspace_id, m.user_id`)
	if err != nil {
		return s.db.fail(err, "could not list members")
	}
	ms, err := collect(rows, scanMember)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// DeleteMember removes a membership.
func (s *WorkspaceStore) DeleteMember(ctx context.Context, wsID, userID string) error {
	res, err := s.q.ExecContext(ctx, `DELETE FROM members WHERE workspace_id = $1 AND user_id = $2`, wsID, userID)
	return s.db.affected(res, err, "not a member")
}

// CountOwners counts a workspace's owners.
func (s *WorkspaceStore) CountOwners(ctx context.Context, wsID string) (int, error) {
	var n int
	err := s.q.QueryRowContext(ctx, `SELECT COUNT(*) FROM members WHERE workspace_id = $1 AND role = 'owner'`, wsID).Scan(&n)
	return n, s.db.fail(err, "database error")
}

const invitationColumns = `id, workspace_id, email, role, invited_by, token_hash, expires_at, accepted_at, accepted_by, revoked_at, created_at`

func scanInvitation(r interface{ Scan(...any) error }) (*workspace.Invitation, error) {
	var inv workspace.Invitation
	var accepted, revoked sql.NullTime
	err := r.Scan(&inv.ID, &inv.WorkspaceID, &inv.Email, &inv.Role, &inv.InvitedBy, &inv.TokenHash, &inv.ExpiresAt, &accepted, &inv.AcceptedBy, &revoked, &inv.CreatedAt)
	inv.AcceptedAt, inv.RevokedAt = timePtr(accepted), timePtr(revoked)
	return &inv, err
}

// CreateInvitation inserts an invitation.
func (s *WorkspaceStore) CreateInvitation(ctx context.Context, inv *workspace.Invitation) error {
	_, err := s.q.ExecContext(ctx, `INSERT INTO invitations (`+invitationColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		inv.ID, inv.WorkspaceID, inv.Email, string(inv.Role), inv.InvitedBy, inv.TokenHash, inv.ExpiresAt, nullTime(inv.AcceptedAt), inv.AcceptedBy, nullTime(inv.RevokedAt), inv.CreatedAt)
	return s.db.fail(err, "could not create the invitation")
}

// FindInvitationByID returns an invitation.
func (s *WorkspaceStore) FindInvitationByID(ctx context.Context, id string) (*workspace.Invitation, error) {
	inv, err := scanInvitation(s.q.QueryRowContext(ctx, `SELECT `+invitationColumns+` FROM invitations WHERE id = $1`, id))
	return inv, s.db.one(err, "invitation "+id+" not found")
}

// FindInvitationByHash returns the invitation with a token digest.
func (s *WorkspaceStore) FindInvitationByHash(ctx context.Context, hash string) (*workspace.Invitation, error) {
	inv, err := scanInvitation(s.q.QueryRowContext(ctx, `SELECT `+invitationColumns+` FROM invitations WHERE token_hash = $1`, hash))
	return inv, s.db.one(err, "invitation not found")
}

// FindInvitations lists a workspace's invitations by ID.
func (s *WorkspaceStore) FindInvitations(ctx context.Context, wsID string, page cove.Page) ([]*workspace.Invitation, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT `+invitationColumns+` FROM invitations WHERE workspace_id = $1 AND id > $2 ORDER BY id LIMIT $3`, wsID, page.After, page.Limit)
	if err != nil {
		return nil, s.db.fail(err, "could not list invitations")
	}
	return collect(rows, scanInvitation)
}

// UpdateInvitation writes an invitation's acceptance and revocation.
func (s *WorkspaceStore) UpdateInvitation(ctx context.Context, inv *workspace.Invitation) error {
	res, err := s.q.ExecContext(ctx, `UPDATE invitations SET accepted_at = $2, accepted_by = $3, revoked_at = $4 WHERE id = $1`,
		inv.ID, nullTime(inv.AcceptedAt), inv.AcceptedBy, nullTime(inv.RevokedAt))
	return s.db.affected(res, err, "invitation "+inv.ID+" not found")
}

// RecordAudit appends an audit entry in the store's transaction.
func (s *WorkspaceStore) RecordAudit(ctx context.Context, e audit.Entry) error {
	return recordAudit(ctx, s.db, s.q, e)
}
