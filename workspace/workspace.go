// Package workspace holds tenants: workspaces, their members with roles, and
// invitations.
//
// The SQL store is the source of truth for membership; the authorization
// relations mirror it. To fail safe when the two cannot be written in one
// transaction, relations that take rights away are removed before the
// store commits and relations that give rights are added after it, and
// SyncRelations rebuilds the additions at every start.
package workspace

import (
	"context"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
)

// Workspace is a tenant. Everything else in Cove belongs to one.
type Workspace struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Role is the caller's role, filled in by listings of "my" workspaces.
	Role Role `json:"role,omitempty"`
}

// Role is a member's role. Each role includes the rights of the ones below
// it: owner > admin > member > viewer.
type Role string

// The roles.
const (
	Owner  Role = "owner"
	Admin  Role = "admin"
	Member Role = "member"
	Viewer Role = "viewer"
)

// Roles lists every role, highest first.
var Roles = []Role{Owner, Admin, Member, Viewer}

// rank orders roles; 0 is not a role.
func (r Role) rank() int {
	switch r {
	case Owner:
		return 4
	case Admin:
		return 3
	case Member:
		return 2
	case Viewer:
		return 1
	}
	return 0
}

// Validate checks that r is a role.
func (r Role) Validate() error {
	if r.rank() == 0 {
		return cove.Errorf(cove.Invalid, "role %q is not one of owner, admin, member, viewer", r).WithDetails(cove.Detail{Field: "role", Message: "unknown role"})
	}
	return nil
}

// MemberInfo is a member as listed: the membership and the person.
type MemberInfo struct {
	WorkspaceID string    `json:"workspace_id"`
	UserID      string    `json:"user_id"`
	Email       string    `json:"email"`
	Name        string    `json:"name"`
	Role        Role      `json:"role"`
	CreatedAt   time.Time `json:"created_at"`
}

// Invitation asks whoever has the email to join with a role. Its token is
// shown once, to the inviter, and stored only as a digest.
type Invitation struct {
	ID          string     `json:"id"`
	WorkspaceID string     `json:"workspace_id"`
	Email       string     `json:"email"`
	Role        Role       `json:"role"`
	InvitedBy   string     `json:"invited_by"`
	TokenHash   string     `json:"-"`
	ExpiresAt   time.Time  `json:"expires_at"`
	AcceptedAt  *time.Time `json:"accepted_at,omitempty"`
	AcceptedBy  string     `json:"accepted_by,omitempty"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
}

// InvitationTTL is how long an invitation stays valid.
const InvitationTTL = 7 * 24 * time.Hour

// MaxNameLen bounds workspace names.
const MaxNameLen = 100

// Store persists workspaces. Methods return not_found for a missing row and
// conflict for a duplicate.
type Store interface {
	// Atomic runs fn in one transaction; fn's Store sees the transaction.
	Atomic(ctx context.Context, fn func(Store) error) error

	CreateWorkspace(ctx context.Context, w *Workspace) error
	FindWorkspaceByID(ctx context.Context, id string) (*Workspace, error)
	// FindWorkspacesOf lists the workspaces userID is a member of, with
	// Role set, ordered by ID.
	FindWorkspacesOf(ctx context.Context, userID string, page cove.Page) ([]*Workspace, error)
	UpdateWorkspace(ctx context.Context, w *Workspace) error
	// LockWorkspace locks the workspace row until the transaction ends
	// (a no-op where transactions are already serialized).
	LockWorkspace(ctx context.Context, id string) error
	// DeleteWorkspace deletes the workspace with its members and invitations.
	DeleteWorkspace(ctx context.Context, id string) error

	// PutMember creates or updates a membership.
	PutMember(ctx context.Context, workspaceID, userID string, role Role, at time.Time) error
	FindMember(ctx context.Context, workspaceID, userID string) (*MemberInfo, error)
	FindMembers(ctx context.Context, workspaceID string, page cove.Page) ([]*MemberInfo, error)
	DeleteMember(ctx context.Context, workspaceID, userID string) error
	CountOwners(ctx context.Context, workspaceID string) (int, error)
	// FindAllMembers calls fn for every membership of every workspace.
	FindAllMembers(ctx context.Context, fn func(*MemberInfo) error) error

	CreateInvitation(ctx context.Context, inv *Invitation) error
	FindInvitationByID(ctx context.Context, id string) (*Invitation, error)
	FindInvitationByHash(ctx context.Context, hash string) (*Invitation, error)
	FindInvitations(ctx context.Context, workspaceID string, page cove.Page) ([]*Invitation, error)
	UpdateInvitation(ctx context.Context, inv *Invitation) error

	RecordAudit(ctx context.Context, e audit.Entry) error
}

// RunCounter counts a workspace's runs that have not finished; the
// computation service satisfies it. A workspace with active runs cannot be
// deleted.
type RunCounter interface {
	CountActiveRuns(ctx context.Context, workspaceID string) (int, error)
}
