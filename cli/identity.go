package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sdk"
)

func (a *app) tokenCommand() *cobra.Command {
	var expires string
	createCmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a personal access token; its secret is shown once",
		Long: `Create a personal access token for scripts and CI. Its secret is printed
once, on stdout, and cannot be shown again. Use it by setting COVE_TOKEN.`,
		Args: exactly("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if expires != "" {
				if _, err := time.ParseDuration(expires); err != nil {
					return usagef("--expires %q is not a duration such as 720h", expires)
				}
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			t, err := c.CreateToken(cmd.Context(), httpapi.TokenInput{Name: args[0], ExpiresIn: expires})
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(cmd.OutOrStdout(), t)
			}
			// The secret alone on stdout, so that $(cove token create x)
			// captures it; the explanation on stderr.
			fmt.Fprintf(cmd.ErrOrStderr(), "Created token %q (%s), valid until %s.\n", t.Name, t.ID, formatTime(t.ExpiresAt))
			fmt.Fprintln(cmd.ErrOrStderr(), "warning: this is the only time the secret is shown; store it now, like a password.")
			fmt.Fprintf(cmd.ErrOrStderr(), "Use it with: %s=<secret> cove ...\n", EnvToken)
			fmt.Fprintln(cmd.OutOrStdout(), t.Secret)
			return nil
		},
	}
	createCmd.Flags().StringVar(&expires, "expires", "", "lifetime such as 720h (default: the server's, 90 days)")

	var lf listFlags
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List your personal access tokens",
		Args:  exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			return list(cmd, a, &lf, columns[*identity.Token]{
				noun:   "tokens",
				header: []string{"ID", "NAME", "PREFIX", "STATE", "EXPIRES", "LAST USED"},
				row: func(t *identity.Token) []string {
					return []string{t.ID, t.Name, t.Prefix, tokenState(t), formatTime(t.ExpiresAt), formatTimePtr(t.LastUsedAt)}
				},
			}, c.ListTokens)
		},
	}
	lf.register(listCmd)

	cmd := groupCommand(&cobra.Command{
		Use:     "token",
		Aliases: []string{"tokens"},
		Short:   "Personal access tokens, for scripts and CI",
	})
	cmd.AddCommand(createCmd, listCmd, &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke one of your personal access tokens",
		Args:  exactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			if err := c.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			a.done(cmd, "Revoked token %s.", args[0])
			return nil
		},
	})
	return cmd
}

func tokenState(t *identity.Token) string {
	switch {
	case t.RevokedAt != nil:
		return "revoked"
	case !time.Now().Before(t.ExpiresAt):
		return "expired"
	default:
		return "active"
	}
}

func (a *app) userCommand() *cobra.Command {
	var (
		lf    listFlags
		email string
	)
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List accounts",
		Args:  exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			return list(cmd, a, &lf, columns[*identity.User]{
				noun:   "users",
				header: []string{"ID", "EMAIL", "NAME", "ADMIN", "DISABLED", "CREATED"},
				row: func(u *identity.User) []string {
					return []string{u.ID, u.Email, u.Name, yesNo(u.Admin), yesNo(u.Disabled), formatTime(u.CreatedAt)}
				},
			}, func(ctx context.Context, o sdk.ListOptions) ([]*identity.User, string, error) {
				return c.ListUsers(ctx, sdk.UserFilter{Email: email, ListOptions: o})
			})
		},
	}
	lf.register(listCmd)
	listCmd.Flags().StringVar(&email, "email", "", "only the account with this email")

	var (
		in        identity.SignupInput
		fromStdin bool
	)
	createCmd := &cobra.Command{
		Use:   "create --email EMAIL --name NAME",
		Short: "Create an account, also when open signup is off",
		Args:  exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in.Email == "" || in.Name == "" {
				return usagef("user create needs --email and --name")
			}
			var err error
			if in.Password, err = readPassword(cmd, fromStdin, true); err != nil {
				return err
			}
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			u, err := c.CreateUser(cmd.Context(), in)
			if err != nil {
				return err
			}
			return a.show(cmd, u, func(w io.Writer) {
				fmt.Fprintf(w, "Created account %s (%s).\n", u.Email, u.ID)
			})
		},
	}
	createCmd.Flags().StringVar(&in.Email, "email", "", "the account's email")
	createCmd.Flags().StringVar(&in.Name, "name", "", "the account's name")
	createCmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of stdin")

	setDisabled := func(use, short, done string, disabled bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " USER",
			Short: short,
			Args:  exactly("USER"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.client(cmd)
				if err != nil {
					return err
				}
				id, err := userID(cmd.Context(), c, args[0])
				if err != nil {
					return err
				}
				u, err := c.SetUserDisabled(cmd.Context(), id, disabled)
				if err != nil {
					return err
				}
				return a.show(cmd, u, func(w io.Writer) {
					fmt.Fprintf(w, "%s %s (%s).\n", done, u.Email, u.ID)
				})
			},
		}
	}

	cmd := groupCommand(&cobra.Command{
		Use:     "user",
		Aliases: []string{"users"},
		Short:   "Accounts (platform admins); USER is a user ID or an email",
	})
	cmd.AddCommand(listCmd, createCmd,
		setDisabled("disable", "Disable an account and end its sessions", "Disabled", true),
		setDisabled("enable", "Enable a disabled account", "Enabled", false),
	)
	return cmd
}

// userID resolves USER, a user ID or an email, to a user ID.
func userID(ctx context.Context, c *sdk.Client, user string) (string, error) {
	if !strings.Contains(user, "@") {
		return user, nil
	}
	us, _, err := c.ListUsers(ctx, sdk.UserFilter{Email: user})
	if err != nil {
		return "", err
	}
	if len(us) == 0 {
		return "", cove.Errorf(cove.NotFound, "no account has the email %s", user)
	}
	return us[0].ID, nil
}

func (a *app) auditCommand() *cobra.Command {
	var (
		lf listFlags
		f  sdk.AuditFilter
	)
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "Read the audit log, newest first",
		Long: `Read the audit log, newest first. Platform admins read all of it;
workspace owners and admins read their workspace's part with --workspace.`,
		Args: exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			return list(cmd, a, &lf, columns[audit.Entry]{
				noun:   "audit entries",
				header: []string{"TIME", "ACTOR", "WORKSPACE", "ACTION", "TARGET", "OUTCOME", "DETAIL"},
				row: func(e audit.Entry) []string {
					return []string{e.Time.Local().Format("2006-01-02 15:04:05"), orDash(e.ActorID), orDash(e.WorkspaceID), e.Action, orDash(e.Target), e.Outcome, orDash(e.Detail)}
				},
			}, func(ctx context.Context, o sdk.ListOptions) ([]audit.Entry, string, error) {
				f.ListOptions = o
				return c.ListAudit(ctx, f)
			})
		},
	}
	lf.register(listCmd)
	listCmd.Flags().StringVar(&f.WorkspaceID, "workspace", "", "only this workspace's entries")
	listCmd.Flags().StringVar(&f.ActorID, "actor", "", "only this user's actions (a user ID)")
	listCmd.Flags().StringVar(&f.Action, "action", "", "only this action, such as workspace.member.invite")

	cmd := groupCommand(&cobra.Command{
		Use:   "audit",
		Short: "The audit log",
	})
	cmd.AddCommand(listCmd)
	return cmd
}
