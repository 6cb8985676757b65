// Command cove is Cove's single binary: the control plane (cove serve), and
// the command-line client of its API.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cli.New(app.ServeCommand()).ExecuteContext(ctx)
	stop()
	os.Exit(cli.ExitCode(err))
}
