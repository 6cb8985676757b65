// Package cli is the `cove` command line: cobra commands that call the
// REST API through package sdk, keep the login in a credentials file and
// print tables for people or raw API JSON for scripts (-o json).
//
// Commands write to cmd.OutOrStdout and cmd.ErrOrStderr and read
// cmd.InOrStdin, so tests run the whole CLI in-process. Errors are printed
// once, by cobra, as "error: <message>" with details and a hint; main maps
// the returned error to an exit status with ExitCode.
package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sdk"
)

// Environment variables the CLI reads.
const (
	EnvServer    = "COVE_SERVER"     // the server URL, below --server
	EnvToken     = "COVE_TOKEN"      // a personal access token; overrides the saved login
	EnvConfigDir = "COVE_CONFIG_DIR" // where credentials.json lives, below --config-dir
	// EnvCAFile and EnvCAFingerprint say how to trust the server's TLS
	// certificate, below --ca-file and --ca-fingerprint.
	EnvCAFile        = "COVE_CA_FILE"
	EnvCAFingerprint = "COVE_CA_FINGERPRINT"
)

// DefaultServer is the server used when no flag, variable or saved login
// names one: a local `cove serve`.
const DefaultServer = "https://127.0.0.1:7100"

// Output formats of -o.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// app holds the global flags of one command tree. Each New makes its own,
// so in-process runs do not share state.
type app struct {
	server    string
	output    string
	configDir string
	// caFile and caFingerprint say which server certificate to trust
	// besides the system's roots.
	caFile, caFingerprint string
}

// New returns the root `cove` command with the client commands and extra,
// such as `serve`. Extra commands must not redefine the global flags
// --server, -o/--output and --config-dir.
func New(extra ...*cobra.Command) *cobra.Command {
	a := &app{}
	root := &cobra.Command{
		Use:   "cove",
		Short: "Cove: confidential compute-to-data",
		Long: `Cove runs algorithms over datasets that never leave their owners' control.

This command talks to a Cove server's REST API. Start with:
  cove signup --email you@example.com --name "Your Name"
  cove login --email you@example.com`,
		SilenceUsage: true,
	}
	groupCommand(root)
	root.SetErrPrefix("error:")
	pf := root.PersistentFlags()
	pf.StringVar(&a.server, "server", "", "URL of the Cove server (env "+EnvServer+"; default: the server of the saved login, else "+DefaultServer+")")
	pf.StringVarP(&a.output, "output", "o", outputTable, "output format: table or json (the raw API object)")
	pf.StringVar(&a.configDir, "config-dir", "", "directory of credentials.json (env "+EnvConfigDir+"; default <user config dir>/cove)")
	pf.StringVar(&a.caFile, "ca-file", "", "PEM file of the CA that signed the server's certificate, such as `cove ca chain` prints (env "+EnvCAFile+"; saved by login)")
	pf.StringVar(&a.caFingerprint, "ca-fingerprint", "", "trust the server whose chain has the certificate with this SHA-256 fingerprint, as `cove serve` prints it (env "+EnvCAFingerprint+"; saved by login)")

	root.AddCommand(
		a.signupCommand(), a.loginCommand(), a.logoutCommand(), a.whoamiCommand(),
		a.workspaceCommand(), a.tokenCommand(), a.userCommand(), a.auditCommand(),
	)
	a.addCatalogCommands(root)
	a.addComputationCommands(root)
	a.addNodeCommands(root)
	root.AddCommand(a.caCommand())
	root.AddCommand(extra...)

	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return explain(c, &usageError{msg: err.Error()})
	})
	a.wrap(root)
	return root
}

// wrap makes every command of the tree check the global flags first and
// turn its errors, and those of its argument checks, into what the user
// sees.
func (a *app) wrap(cmd *cobra.Command) {
	if run := cmd.RunE; run != nil {
		cmd.RunE = func(c *cobra.Command, args []string) error {
			if err := a.validate(); err != nil {
				return explain(c, err)
			}
			return explain(c, run(c, args))
		}
	}
	if check := cmd.Args; check != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				return explain(c, asUsage(err))
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		a.wrap(sub)
	}
}

// validate checks the global flags.
func (a *app) validate() error {
	if a.output != outputTable && a.output != outputJSON {
		return usagef("-o must be table or json, not %q", a.output)
	}
	return nil
}

// groupCommand makes cmd, which only holds subcommands, print its help
// when called alone and fail as a usage error on an unknown subcommand.
func groupCommand(cmd *cobra.Command) *cobra.Command {
	cmd.Args = cobra.ArbitraryArgs
	cmd.SuggestionsMinimumDistance = 2
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return c.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return &usageError{msg: msg}
	}
	return cmd
}

// exactly checks that a command gets exactly the named arguments.
func exactly(names ...string) cobra.PositionalArgs {
	return func(c *cobra.Command, got []string) error {
		if len(got) == len(names) {
			return nil
		}
		if len(names) == 0 {
			return usagef("%s takes no arguments, got %q", c.CommandPath(), got)
		}
		return usagef("%s needs %s, got %d argument(s)", c.CommandPath(), strings.Join(names, " "), len(got))
	}
}

// dir returns the configuration directory.
func (a *app) dir() (string, error) {
	if a.configDir != "" {
		return a.configDir, nil
	}
	if d := os.Getenv(EnvConfigDir); d != "" {
		return d, nil
	}
	base, err := os.UserConfigDir()
	if err != nil {
		return "", usagef("cannot find a configuration directory (%v); pass --config-dir or set %s", err, EnvConfigDir)
	}
	return filepath.Join(base, "cove"), nil
}

// serverURL resolves the server: --server, then COVE_SERVER, then the
// saved login's, then DefaultServer.
func (a *app) serverURL(saved *credentials) string {
	switch {
	case a.server != "":
		return normalizeURL(a.server)
	case os.Getenv(EnvServer) != "":
		return normalizeURL(os.Getenv(EnvServer))
	case saved != nil && saved.Server != "":
		return normalizeURL(saved.Server)
	default:
		return DefaultServer
	}
}

func normalizeURL(u string) string { return strings.TrimRight(strings.TrimSpace(u), "/") }

// anonymous returns a client without credentials, for signup and login.
func (a *app) anonymous() (*sdk.Client, error) {
	saved, _ := a.loadCredentials() // a damaged file must not stop a new login
	server := a.serverURL(saved)
	tr, err := a.trust(saved, server)
	if err != nil {
		return nil, err
	}
	return sdk.New(server, sdk.WithTLS(tr.config))
}

// client returns a client authenticated by COVE_TOKEN or, when it is for
// the same server, by the saved login, whose tokens are saved again
// whenever the client refreshes them.
func (a *app) client(cmd *cobra.Command) (*sdk.Client, error) {
	saved, err := a.loadCredentials()
	if err != nil && os.Getenv(EnvToken) == "" {
		return nil, err
	}
	server := a.serverURL(saved)
	tr, err := a.trust(saved, server)
	if err != nil {
		return nil, err
	}
	opts := []sdk.Option{sdk.WithTLS(tr.config)}
	switch {
	case os.Getenv(EnvToken) != "":
		opts = append(opts, sdk.WithToken(os.Getenv(EnvToken)))
	case saved != nil && normalizeURL(saved.Server) == server:
		opts = append(opts, sdk.WithToken(saved.AccessToken), sdk.WithRefresh(saved.RefreshToken, func(t *identity.Tokens) {
			saved.update(t)
			if err := a.saveCredentials(saved); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: the session was renewed but %s; the next command may ask you to log in again\n", messageOf(err))
			}
		}))
	case saved != nil:
		// Tokens go only to the server that issued them.
		return nil, cove.Errorf(cove.Unauthenticated, "you are logged in to %s, not to %s", saved.Server, server)
	default:
		return nil, cove.Errorf(cove.Unauthenticated, "you are not logged in to %s", server)
	}
	return sdk.New(server, opts...)
}

// Extend adds cmds under the command group named parent, such as the node
// daemon's `run` under `cove node`, which lives outside this package
// because it is not a client of the API.
func Extend(root *cobra.Command, parent string, cmds ...*cobra.Command) {
	for _, c := range root.Commands() {
		if c.Name() == parent {
			c.AddCommand(cmds...)
			return
		}
	}
	panic("cli: no command group " + parent) // a wiring bug, caught by any run of the binary
}
