package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sdk"
	"github.com/covecompute/cove/workspace"
)

func (a *app) workspaceCommand() *cobra.Command {
	cmd := groupCommand(&cobra.Command{
		Use:     "workspace",
		Aliases: []string{"ws"},
		Short:   "Workspaces, their members and invitations",
	})
	cmd.AddCommand(
		&cobra.Command{
			Use:   "create NAME",
			Short: "Create a workspace that you own",
			Args:  exactly("NAME"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.client(cmd)
				if err != nil {
					return err
				}
				ws, err := c.CreateWorkspace(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return a.show(cmd, ws, func(w io.Writer) {
					fmt.Fprintf(w, "Created workspace %q (%s).\n", ws.Name, ws.ID)
				})
			},
		},
		a.workspaceListCommand(),
		&cobra.Command{
			Use:   "get ID",
			Short: "Show a workspace",
			Args:  exactly("ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.client(cmd)
				if err != nil {
					return err
				}
				w, err := c.GetWorkspace(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return a.show(cmd, w, func(out io.Writer) {
					fields(out, "id", w.ID, "name", w.Name, "created", formatTime(w.CreatedAt), "updated", formatTime(w.UpdatedAt))
				})
			},
		},
		&cobra.Command{
			Use:   "rename ID NAME",
			Short: "Rename a workspace (owners and admins)",
			Args:  exactly("ID", "NAME"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.client(cmd)
				if err != nil {
					return err
				}
				w, err := c.RenameWorkspace(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				return a.show(cmd, w, func(out io.Writer) {
					fmt.Fprintf(out, "Renamed workspace %s to %q.\n", w.ID, w.Name)
				})
			},
		},
		a.workspaceDeleteCommand(),
		a.memberCommand(),
		a.invitationCommand(),
	)
	return cmd
}

func (a *app) workspaceListCommand() *cobra.Command {
	var lf listFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the workspaces you are a member of",
		Args:  exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			return list(cmd, a, &lf, columns[*workspace.Workspace]{
				noun:   "workspaces",
				header: []string{"ID", "NAME", "ROLE", "CREATED"},
				row: func(w *workspace.Workspace) []string {
					return []string{w.ID, w.Name, string(w.Role), formatTime(w.CreatedAt)}
				},
			}, c.ListWorkspaces)
		},
	}
	lf.register(cmd)
	return cmd
}

func (a *app) workspaceDeleteCommand() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a workspace with its members and invitations (owners)",
		Args:  exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			id := args[0]
			if !yes {
				w, err := c.GetWorkspace(cmd.Context(), id)
				if err != nil {
					return err
				}
				if err := confirm(cmd, fmt.Sprintf("Delete workspace %q (%s) with all its members and invitations?", w.Name, w.ID), "--yes"); err != nil {
					return err
				}
			}
			if err := c.DeleteWorkspace(cmd.Context(), id); err != nil {
				return err
			}
			a.done(cmd, "Deleted workspace %s.", id)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask to confirm")
	return cmd
}

func (a *app) memberCommand() *cobra.Command {
	var lf listFlags
	listCmd := &cobra.Command{
		Use:   "list WORKSPACE",
		Short: "List a workspace's members",
		Args:  exactly("WORKSPACE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			return list(cmd, a, &lf, memberColumns, func(ctx context.Context, o sdk.ListOptions) ([]*workspace.MemberInfo, string, error) {
				return c.ListMembers(ctx, args[0], o)
			})
		},
	}
	lf.register(listCmd)

	var role string
	inviteCmd := &cobra.Command{
		Use:   "invite WORKSPACE EMAIL --role ROLE",
		Short: "Invite someone by email; prints the one-time token they accept",
		Args:  exactly("WORKSPACE", "EMAIL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := parseRole(role)
			if err != nil {
				return err
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			inv, err := c.Invite(cmd.Context(), args[0], args[1], r)
			if err != nil {
				return err
			}
			return a.show(cmd, inv, func(w io.Writer) {
				fmt.Fprintf(w, "Invited %s to workspace %s as %s. The invitation expires %s.\n", inv.Email, inv.WorkspaceID, inv.Role, formatTime(inv.ExpiresAt))
				fmt.Fprintf(w, "Its token is shown only now:\n\n  %s\n\n", inv.Token)
				fmt.Fprintf(w, "Send it to %s, who accepts with:\n\n  cove workspace member accept %s --server %s\n", inv.Email, inv.Token, c.BaseURL())
			})
		},
	}
	inviteCmd.Flags().StringVar(&role, "role", string(workspace.Member), "the role: owner, admin, member or viewer")

	cmd := groupCommand(&cobra.Command{
		Use:     "member",
		Aliases: []string{"members"},
		Short:   "A workspace's members; USER is a user ID or an email",
	})
	cmd.AddCommand(
		listCmd,
		inviteCmd,
		&cobra.Command{
			Use:   "accept TOKEN",
			Short: "Accept an invitation sent to your email",
			Args:  exactly("TOKEN"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.client(cmd)
				if err != nil {
					return err
				}
				m, err := c.AcceptInvitation(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return a.show(cmd, m, func(w io.Writer) {
					fmt.Fprintf(w, "Joined workspace %s as %s.\n", m.WorkspaceID, m.Role)
				})
			},
		},
		&cobra.Command{
			Use:   "role WORKSPACE USER ROLE",
			Short: "Change a member's role (owners and admins; only owners touch owners)",
			Args:  exactly("WORKSPACE", "USER", "ROLE"),
			RunE: func(cmd *cobra.Command, args []string) error {
				r, err := parseRole(args[2])
				if err != nil {
					return err
				}
				c, err := a.client(cmd)
				if err != nil {
					return err
				}
				user, err := memberID(cmd.Context(), c, args[0], args[1])
				if err != nil {
					return err
				}
				m, err := c.ChangeRole(cmd.Context(), args[0], user, r)
				if err != nil {
					return err
				}
				return a.show(cmd, m, func(w io.Writer) {
					fmt.Fprintf(w, "%s is now %s of workspace %s.\n", m.Email, m.Role, m.WorkspaceID)
				})
			},
		},
		&cobra.Command{
			Use:   "remove WORKSPACE USER",
			Short: "Remove a member, or yourself to leave (the last owner cannot)",
			Args:  exactly("WORKSPACE", "USER"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.client(cmd)
				if err != nil {
					return err
				}
				user, err := memberID(cmd.Context(), c, args[0], args[1])
				if err != nil {
					return err
				}
				if err := c.RemoveMember(cmd.Context(), args[0], user); err != nil {
					return err
				}
				a.done(cmd, "Removed %s from workspace %s.", args[1], args[0])
				return nil
			},
		},
	)
	return cmd
}

var memberColumns = columns[*workspace.MemberInfo]{
	noun:   "members",
	header: []string{"USER ID", "EMAIL", "NAME", "ROLE", "JOINED"},
	row: func(m *workspace.MemberInfo) []string {
		return []string{m.UserID, m.Email, m.Name, string(m.Role), formatTime(m.CreatedAt)}
	},
}

func (a *app) invitationCommand() *cobra.Command {
	var lf listFlags
	listCmd := &cobra.Command{
		Use:   "list WORKSPACE",
		Short: "List a workspace's invitations (owners and admins)",
		Args:  exactly("WORKSPACE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			return list(cmd, a, &lf, columns[*workspace.Invitation]{
				noun:   "invitations",
				header: []string{"ID", "EMAIL", "ROLE", "STATE", "EXPIRES"},
				row: func(i *workspace.Invitation) []string {
					return []string{i.ID, i.Email, string(i.Role), invitationState(i), formatTime(i.ExpiresAt)}
				},
			}, func(ctx context.Context, o sdk.ListOptions) ([]*workspace.Invitation, string, error) {
				return c.ListInvitations(ctx, args[0], o)
			})
		},
	}
	lf.register(listCmd)

	cmd := groupCommand(&cobra.Command{
		Use:     "invitation",
		Aliases: []string{"invitations"},
		Short:   "A workspace's invitations",
	})
	cmd.AddCommand(
		listCmd,
		&cobra.Command{
			Use:   "revoke WORKSPACE ID",
			Short: "Revoke an invitation that was not used yet",
			Args:  exactly("WORKSPACE", "ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.client(cmd)
				if err != nil {
					return err
				}
				if err := c.RevokeInvitation(cmd.Context(), args[0], args[1]); err != nil {
					return err
				}
				a.done(cmd, "Revoked invitation %s.", args[1])
				return nil
			},
		},
	)
	return cmd
}

func invitationState(i *workspace.Invitation) string {
	switch {
	case i.AcceptedAt != nil:
		return "accepted"
	case i.RevokedAt != nil:
		return "revoked"
	case !time.Now().Before(i.ExpiresAt):
		return "expired"
	default:
		return "open"
	}
}

// parseRole checks a role given on the command line.
func parseRole(s string) (workspace.Role, error) {
	r := workspace.Role(strings.ToLower(strings.TrimSpace(s)))
	if r.Validate() != nil {
		return "", usagef("role %q is not one of owner, admin, member, viewer", s)
	}
	return r, nil
}

// memberID resolves USER, a user ID or the email of a member, to the
// member's user ID: people know emails, the API wants IDs.
func memberID(ctx context.Context, c *sdk.Client, workspaceID, user string) (string, error) {
	if !strings.Contains(user, "@") {
		return user, nil
	}
	email := identity.NormalizeEmail(user)
	pages := func(ctx context.Context, o sdk.ListOptions) ([]*workspace.MemberInfo, string, error) {
		o.Limit = cove.MaxPageLimit
		return c.ListMembers(ctx, workspaceID, o)
	}
	for m, err := range sdk.All(ctx, pages) {
		if err != nil {
			return "", err
		}
		if m.Email == email {
			return m.UserID, nil
		}
	}
	return "", cove.Errorf(cove.NotFound, "%s is not a member of workspace %s", user, workspaceID)
}
