package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sdk"
)

func (a *app) signupCommand() *cobra.Command {
	var (
		in        identity.SignupInput
		fromStdin bool
	)
	cmd := &cobra.Command{
		Use:   "signup --email EMAIL --name NAME",
		Short: "Create an account; the first one on a server becomes platform admin",
		Args:  exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in.Email == "" || in.Name == "" {
				return usagef("signup needs --email and --name")
			}
			var err error
			if in.Password, err = readPassword(cmd, fromStdin, true); err != nil {
				return err
			}
			c, err := a.anonymous()
			if err != nil {
				return err
			}
			u, err := c.Signup(cmd.Context(), in)
			if err != nil {
				return err
			}
			return a.show(cmd, u, func(w io.Writer) {
				fmt.Fprintf(w, "Created account %s (%s) on %s.\n", u.Email, u.ID, c.BaseURL())
				if u.Admin {
					fmt.Fprintln(w, "It is the first account, so it is a platform admin.")
				}
				fmt.Fprintf(w, "Log in with: cove login --email %s --server %s\n", u.Email, c.BaseURL())
			})
		},
	}
	cmd.Flags().StringVar(&in.Email, "email", "", "your email address")
	cmd.Flags().StringVar(&in.Name, "name", "", "your name as others see it")
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of stdin")
	return cmd
}

func (a *app) loginCommand() *cobra.Command {
	var (
		in        identity.LoginInput
		fromStdin bool
	)
	cmd := &cobra.Command{
		Use:   "login --email EMAIL",
		Short: "Log in and save the session in the config directory",
		Long: `Log in with email and password. The session's tokens are saved in
<config-dir>/credentials.json, readable only by you, and renewed as they
expire. A personal access token in COVE_TOKEN takes precedence over it.`,
		Args: exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in.Email == "" {
				if saved, _ := a.loadCredentials(); saved != nil {
					in.Email = saved.Email
				}
			}
			if in.Email == "" {
				return usagef("login needs --email")
			}
			var err error
			if in.Password, err = readPassword(cmd, fromStdin, false); err != nil {
				return err
			}
			saved, _ := a.loadCredentials()
			server := a.serverURL(saved)
			tr, err := a.trust(saved, server)
			if err != nil {
				return err
			}
			c, err := sdk.New(server, sdk.WithTLS(tr.config))
			if err != nil {
				return err
			}
			t, err := c.Login(cmd.Context(), in)
			if err != nil {
				return err
			}
			creds := &credentials{Server: c.BaseURL(), CA: tr.caPEM, CAFingerprint: tr.fingerprint}
			creds.update(t)
			if err := a.saveCredentials(creds); err != nil {
				return err
			}
			if os.Getenv(EnvToken) != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s is set and is used instead of this login until you unset it\n", EnvToken)
			}
			// The tokens stay in the credentials file; -o json shows the
			// account, not secrets that would end up in logs.
			return a.show(cmd, t.User, func(w io.Writer) {
				fmt.Fprintf(w, "Logged in to %s as %s.\n", c.BaseURL(), t.User.Email)
			})
		},
	}
	cmd.Flags().StringVar(&in.Email, "email", "", "your email address (default: that of the saved login)")
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of stdin")
	return cmd
}

func (a *app) logoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "End the session and delete the saved login",
		Args:  exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			saved, err := a.loadCredentials()
			if err != nil {
				// A damaged file holds no session to end; delete it.
				return a.removeCredentials()
			}
			if saved == nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "not logged in")
				return nil
			}
			// The session is ended on the server that issued it, whatever
			// --server or COVE_TOKEN say.
			c, err := sdk.New(saved.Server, sdk.WithToken(saved.AccessToken), sdk.WithRefresh(saved.RefreshToken, nil))
			if err == nil {
				err = c.Logout(cmd.Context())
			}
			if err != nil && cove.ErrorCode(err) != cove.Unauthenticated {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: could not end the session on the server: %s\nThe saved login is deleted anyway; the session ends by itself when its refresh token expires.\n", messageOf(err))
			}
			if err := a.removeCredentials(); err != nil {
				return err
			}
			a.done(cmd, "Logged out of %s.", saved.Server)
			return nil
		},
	}
}

func (a *app) whoamiCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the account you are logged in as",
		Args:  exactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd)
			if err != nil {
				return err
			}
			u, err := c.Me(cmd.Context())
			if err != nil {
				return err
			}
			auth := "saved login"
			if os.Getenv(EnvToken) != "" {
				auth = "personal access token from " + EnvToken
			}
			return a.show(cmd, u, func(w io.Writer) {
				fields(w,
					"email", u.Email,
					"name", u.Name,
					"id", u.ID,
					"admin", yesNo(u.Admin),
					"server", c.BaseURL(),
					"via", auth,
				)
			})
		},
	}
}
