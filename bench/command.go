package bench

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/config"
	"github.com/covecompute/cove/runproto"
)

// Command returns `cove bench`.
func Command() *cobra.Command {
	var (
		quick     bool
		scenarios []string
		dir       string
		nodes     int
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure this machine against Cove's performance targets",
		Long: `Measure Cove's performance against the targets in docs/performance.md.

Each scenario starts its own control plane in a temporary directory (SQLite
and an embedded NATS server unless --database-url or a --config file says
otherwise; on PostgreSQL each gets a scratch database, created and dropped
through --database-url) and real in-process compute nodes. The heartbeat and
memory scenarios run ` + "`cove serve --dev`" + ` as a child process and measure it
from outside. The whole run takes under 10 minutes on 2 cores; --quick is a
smoke run of a few seconds per scenario whose figures are not comparable.
Progress goes to stderr, the report to stdout.

Scenarios: ` + scenarioNames() + `.`,
		Example: `  cove bench
  cove bench --quick
  cove bench --scenario latency --scenario throughput -o json
  cove bench --database-url postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			output := "table"
			if f := cmd.Flag("output"); f != nil { // the CLI's global -o
				output = f.Value.String()
			}
			if nodes < 0 {
				return cove.Errorf(cove.Invalid, "--nodes must not be negative")
			}
			if output != "table" && output != "json" {
				return cove.Errorf(cove.Invalid, "-o must be table or json, not %q", output)
			}
			cfg, err := config.Load(cmd.Flags(), config.Environ())
			if err != nil {
				return err
			}
			file, _ := cmd.Flags().GetString("config")
			rep, err := Run(cmd.Context(), Options{Config: cfg, ConfigFile: file, Quick: quick, Nodes: nodes, Progress: cmd.ErrOrStderr(), Dir: dir}, scenarios...)
			if rep == nil {
				return err
			}
			if output == "json" {
				_ = rep.WriteJSON(cmd.OutOrStdout())
			} else {
				_ = rep.WriteMarkdown(cmd.OutOrStdout())
			}
			if err == nil && len(rep.Errors) > 0 {
				err = cove.Errorf(cove.Internal, "%d scenario(s) failed; see the report", len(rep.Errors))
			}
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&quick, "quick", false, "smoke run: small sizes, a few seconds per scenario")
	f.StringArrayVar(&scenarios, "scenario", nil, "measure only this scenario (repeatable): "+scenarioNames())
	f.IntVar(&nodes, "nodes", 0, "simulated nodes of the heartbeat and memory scenarios (default 10000, 500 with --quick)")
	f.StringVar(&dir, "dir", "", "directory for the scenarios' data (default: a temporary one, removed afterwards)")
	f.String("config", "", "cove serve configuration file (YAML) for the control planes: an external NATS, PostgreSQL, any setting")
	f.String("database-url", "", "PostgreSQL server to create scratch databases on (needs CREATE DATABASE)")
	cmd.AddCommand(heartbeatsCommand())
	return cmd
}

// heartbeatsCommand is the hidden child that the heartbeat scenario starts
// to publish the simulated nodes' heartbeats.
func heartbeatsCommand() *cobra.Command {
	var (
		nodes    string
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:    "heartbeats --nodes FILE",
		Short:  "Publish the heartbeats of enrolled simulated nodes (used by cove bench)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nodes == "" {
				return cove.Errorf(cove.Invalid, "--nodes must name the node list")
			}
			if interval <= 0 {
				return cove.Errorf(cove.Invalid, "--interval must be positive")
			}
			return Publish(cmd.Context(), nodes, interval, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&nodes, "nodes", "", "JSON lines of node_id, nats_url and creds")
	cmd.Flags().DurationVar(&interval, "interval", runproto.NodeHeartbeatInterval, "heartbeat interval of each node")
	return cmd
}

func scenarioNames() string {
	s := ""
	for i, sc := range Scenarios() {
		if i > 0 {
			s += ", "
		}
		s += sc.Name
	}
	return fmt.Sprint(s)
}
