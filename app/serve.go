package app

import (
	"github.com/spf13/cobra"

	"github.com/covecompute/cove/config"
)

// ServeCommand returns `cove serve`.
func ServeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the control plane (API, embedded NATS and stores)",
		Long: `Run the control plane.

With no flags it keeps everything in ./cove-data: SQLite, an embedded NATS
server with JetStream, and the keys. --dev also seeds an admin account and a
demo workspace and prints how to log in. Every setting can come from a YAML
file (--config), COVE_* environment variables or flags; see
docs/configuration.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cmd.Flags(), config.Environ())
			if err != nil {
				return err
			}
			m := NewMain(cfg, cmd.ErrOrStderr(), cmd.OutOrStdout())
			if err := m.Run(cmd.Context()); err != nil {
				_ = m.Close()
				return err
			}
			<-cmd.Context().Done()
			m.Log.Info("shutting down")
			return m.Close()
		},
	}
	config.AddFlags(cmd.Flags())
	return cmd
}
