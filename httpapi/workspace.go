package httpapi

import (
	"github.com/covecompute/cove/workspace"
)

// NameInput names or renames something.
type NameInput struct {
	Name string `json:"name"`
}

// InviteInput invites someone into a workspace.
type InviteInput struct {
	Email string         `json:"email"`
	Role  workspace.Role `json:"role" jsonschema:"enum=owner,enum=admin,enum=member,enum=viewer"`
}

// RoleInput changes a member's role.
type RoleInput struct {
	Role workspace.Role `json:"role" jsonschema:"enum=owner,enum=admin,enum=member,enum=viewer"`
}

// AcceptInput accepts an invitation.
type AcceptInput struct {
	Token string `json:"token"`
}

func (s *Server) addWorkspaceRoutes() {
	const tag = "workspaces"
	ws := s.workspace
	handle(s, tag, "GET /api/v1/workspaces", "The workspaces the caller is a member of, with their role",
		func(c *Call, _ Empty) (List[*workspace.Workspace], error) {
			page, err := c.Page()
			if err != nil {
				return List[*workspace.Workspace]{}, err
			}
			out, err := ws.List(c.Ctx(), c.P, page)
			return list(out, page.Limit, func(w *workspace.Workspace) string { return w.ID }), err
		}, paged())
	handle(s, tag, "POST /api/v1/workspaces", "Create a workspace owned by the caller",
		func(c *Call, in NameInput) (*workspace.Workspace, error) { return ws.Create(c.Ctx(), c.P, in.Name) }, status(201))
	handle(s, tag, "GET /api/v1/workspaces/{id}", "One workspace",
		func(c *Call, _ Empty) (*workspace.Workspace, error) { return ws.Get(c.Ctx(), c.P, c.Path("id")) })
	handle(s, tag, "PATCH /api/v1/workspaces/{id}", "Rename a workspace (owners and admins)",
		func(c *Call, in NameInput) (*workspace.Workspace, error) {
			return ws.Rename(c.Ctx(), c.P, c.Path("id"), in.Name)
		})
	handle(s, tag, "DELETE /api/v1/workspaces/{id}", "Delete a workspace (owners; refused while runs are active)",
		func(c *Call, _ Empty) (Empty, error) { return Empty{}, ws.Delete(c.Ctx(), c.P, c.Path("id")) })

	handle(s, tag, "GET /api/v1/workspaces/{id}/members", "A workspace's members",
		func(c *Call, _ Empty) (List[*workspace.MemberInfo], error) {
			page, err := c.Page()
			if err != nil {
				return List[*workspace.MemberInfo]{}, err
			}
			out, err := ws.Members(c.Ctx(), c.P, c.Path("id"), page)
			return list(out, page.Limit, func(m *workspace.MemberInfo) string { return m.UserID }), err
		}, paged())
	handle(s, tag, "PATCH /api/v1/workspaces/{id}/members/{user}", "Change a member's role (owners and admins; only owners touch owners)",
		func(c *Call, in RoleInput) (*workspace.MemberInfo, error) {
			return ws.ChangeRole(c.Ctx(), c.P, c.Path("id"), c.Path("user"), in.Role)
		})
	handle(s, tag, "DELETE /api/v1/workspaces/{id}/members/{user}", "Remove a member, or leave (the last owner cannot)",
		func(c *Call, _ Empty) (Empty, error) {
			return Empty{}, ws.RemoveMember(c.Ctx(), c.P, c.Path("id"), c.Path("user"))
		})

	handle(s, tag, "GET /api/v1/workspaces/{id}/invitations", "A workspace's invitations (owners and admins)",
		func(c *Call, _ Empty) (List[*workspace.Invitation], error) {
			page, err := c.Page()
			if err != nil {
				return List[*workspace.Invitation]{}, err
			}
			out, err := ws.Invitations(c.Ctx(), c.P, c.Path("id"), page)
			return list(out, page.Limit, func(i *workspace.Invitation) string { return i.ID }), err
		}, paged())
	handle(s, tag, "POST /api/v1/workspaces/{id}/invitations", "Invite an email with a role; the one-time token, valid 7 days, is shown only in this answer",
		func(c *Call, in InviteInput) (*workspace.CreatedInvitation, error) {
			return ws.Invite(c.Ctx(), c.P, c.Path("id"), in.Email, in.Role)
		}, status(201))
	handle(s, tag, "DELETE /api/v1/workspaces/{id}/invitations/{inv}", "Revoke an unused invitation",
		func(c *Call, _ Empty) (Empty, error) {
			return Empty{}, ws.RevokeInvitation(c.Ctx(), c.P, c.Path("id"), c.Path("inv"))
		})
	handle(s, tag, "POST /api/v1/invitations/accept", "Accept an invitation addressed to the caller's email",
		func(c *Call, in AcceptInput) (*workspace.MemberInfo, error) { return ws.Accept(c.Ctx(), c.P, in.Token) })
}
