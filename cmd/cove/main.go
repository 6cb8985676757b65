// Command cove is Cove's single binary: the control plane (cove serve), the
// compute node (cove node run), the preparation of an external NATS (cove
// nats init), the benchmarks (cove bench), and the command-line client of
// the API.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/bench"
	"github.com/covecompute/cove/cli"
	"github.com/covecompute/cove/computenode"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := cli.New(app.ServeCommand(), app.NATSCommand(), bench.Command())
	cli.Extend(root, "node", computenode.Command())
	err := root.ExecuteContext(ctx)
	stop()
	os.Exit(cli.ExitCode(err))
}
