package app

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/covecompute/cove/natsbus"
)

// NATSCommand returns `cove nats`, which prepares external NATS
// deployments for the control plane to manage.
func NATSCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nats",
		Short: "Prepare an external NATS server for Cove",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(natsInitCommand())
	return cmd
}

func natsInitCommand() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "init DIR",
		Short: "Write the keys and nats-server configuration of a NATS deployment that Cove manages",
		Long: `Write a new NATS deployment into DIR: an operator (operator.jwt, operator.nk),
its system account with one user (system.creds), the key of the account Cove
runs in (account.nk) and a nats-server configuration (nats-server.conf) in
operator mode with a full account resolver and JetStream. Every file is 0600.

nats-server needs nats-server.conf and operator.jwt; cove serve needs
operator.nk, system.creds and account.nk, and pushes its account to the
server at every start. DIR must not hold a deployment already. See
docs/external-nats.md.`,
		Example: `  cove nats init /etc/cove/nats --listen 0.0.0.0:4222`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := natsbus.InitExternal(args[0], listen)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Wrote a NATS deployment to %s:\n", d.Dir)
			fmt.Fprintf(out, "  for nats-server: %s, %s\n", natsbus.DeployServerConfig, natsbus.DeployOperatorJWT)
			fmt.Fprintf(out, "  for cove serve, secret: %s, %s, %s\n\n", natsbus.DeployOperatorSeed, natsbus.DeploySystemCreds, natsbus.DeployAccountSeed)
			fmt.Fprintf(out, "Start NATS:\n  nats-server -c %s\n\n", shellQuote(d.ServerConfig))
			fmt.Fprintf(out, "Start Cove against it:\n  cove serve --nats-url %s --nats-operator-seed %s --nats-system-creds %s --nats-account-seed %s\n",
				shellQuote(d.URL), shellQuote(d.OperatorSeedFile), shellQuote(d.SystemCredsFile), shellQuote(d.AccountSeedFile))
			if !strings.HasPrefix(listen, "127.") && !strings.HasPrefix(listen, "localhost:") {
				fmt.Fprintf(out, "\nNodes on other hosts dial %s; set --nats-url (or nats.advertise_url) to the name they reach it by.\n", d.URL)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", natsbus.DefaultDeployListen, "host:port nats-server listens on for Cove, nodes and agents")
	return cmd
}

// shellQuote quotes s for a POSIX shell when it holds anything but the
// characters of ordinary paths and URLs.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.,/:@=+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
