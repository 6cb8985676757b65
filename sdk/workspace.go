package sdk

import (
	"context"
	"net/http"

	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/workspace"
)

// CreateWorkspace creates a workspace owned by the caller.
func (c *Client) CreateWorkspace(ctx context.Context, name string) (*workspace.Workspace, error) {
	return one[workspace.Workspace](ctx, c, http.MethodPost, path("workspaces"), httpapi.NameInput{Name: name})
}

// ListWorkspaces returns a page of the workspaces the caller is a member
// of, each with the caller's Role, and the next cursor.
func (c *Client) ListWorkspaces(ctx context.Context, opts ListOptions) ([]*workspace.Workspace, string, error) {
	return page[*workspace.Workspace](ctx, c, path("workspaces"), opts.query())
}

// GetWorkspace returns one workspace; one the caller cannot see is
// NotFound.
func (c *Client) GetWorkspace(ctx context.Context, id string) (*workspace.Workspace, error) {
	return one[workspace.Workspace](ctx, c, http.MethodGet, path("workspaces", id), nil)
}

// RenameWorkspace renames a workspace; owners and admins only.
func (c *Client) RenameWorkspace(ctx context.Context, id, name string) (*workspace.Workspace, error) {
	return one[workspace.Workspace](ctx, c, http.MethodPatch, path("workspaces", id), httpapi.NameInput{Name: name})
}

// DeleteWorkspace deletes a workspace; owners only, and Conflict while it
// has active runs.
func (c *Client) DeleteWorkspace(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, path("workspaces", id), nil, nil, nil)
}

// ListMembers returns a page of a workspace's members and the next cursor.
func (c *Client) ListMembers(ctx context.Context, workspaceID string, opts ListOptions) ([]*workspace.MemberInfo, string, error) {
	return page[*workspace.MemberInfo](ctx, c, path("workspaces", workspaceID, "members"), opts.query())
}

// ChangeRole sets a member's role; owners and admins only, only owners
// touch owners, and demoting the last owner is Conflict.
func (c *Client) ChangeRole(ctx context.Context, workspaceID, userID string, role workspace.Role) (*workspace.MemberInfo, error) {
	return one[workspace.MemberInfo](ctx, c, http.MethodPatch, path("workspaces", workspaceID, "members", userID), httpapi.RoleInput{Role: role})
}

// RemoveMember removes a member, or the caller themselves to leave; the
// last owner cannot leave (Conflict).
func (c *Client) RemoveMember(ctx context.Context, workspaceID, userID string) error {
	return c.call(ctx, http.MethodDelete, path("workspaces", workspaceID, "members", userID), nil, nil, nil)
}

// Invite invites an email into a workspace with a role. The answer's Token,
// valid for workspace.InvitationTTL, is shown only here; the invitee passes
// it to AcceptInvitation.
func (c *Client) Invite(ctx context.Context, workspaceID, email string, role workspace.Role) (*workspace.CreatedInvitation, error) {
	return one[workspace.CreatedInvitation](ctx, c, http.MethodPost, path("workspaces", workspaceID, "invitations"), httpapi.InviteInput{Email: email, Role: role})
}

// ListInvitations returns a page of a workspace's invitations, used or not,
// and the next cursor; owners and admins only.
func (c *Client) ListInvitations(ctx context.Context, workspaceID string, opts ListOptions) ([]*workspace.Invitation, string, error) {
	return page[*workspace.Invitation](ctx, c, path("workspaces", workspaceID, "invitations"), opts.query())
}

// RevokeInvitation revokes an unused invitation; an accepted one is
// Conflict.
func (c *Client) RevokeInvitation(ctx context.Context, workspaceID, invitationID string) error {
	return c.call(ctx, http.MethodDelete, path("workspaces", workspaceID, "invitations", invitationID), nil, nil, nil)
}

// AcceptInvitation joins the caller to the invitation's workspace. The
// invitation must be addressed to the caller's email (else Forbidden);
// an unknown, revoked or expired one is NotFound, a used one Conflict.
func (c *Client) AcceptInvitation(ctx context.Context, token string) (*workspace.MemberInfo, error) {
	return one[workspace.MemberInfo](ctx, c, http.MethodPost, path("invitations", "accept"), httpapi.AcceptInput{Token: token})
}
