package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/cli"
	"github.com/covecompute/cove/computenode"
)

// Environment of the test binary re-executed as `cove`: when
// envRunCove is "1" the binary runs the command line in envCoveArgs (a
// JSON array) exactly as cmd/cove does, and exits with its status. The
// end-to-end tests start compute nodes this way, as separate processes
// running the real node code.
const (
	envRunCove  = "COVE_TEST_RUN_NODE"
	envCoveArgs = "COVE_TEST_NODE_ARGS"
)

func TestMain(m *testing.M) {
	if os.Getenv(envRunCove) == "1" {
		os.Exit(runCove())
	}
	os.Exit(m.Run())
}

// runCove is cmd/cove's main with its arguments taken from envCoveArgs.
func runCove() int {
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv(envCoveArgs)), &args); err != nil {
		fmt.Fprintf(os.Stderr, "%s is not a JSON array of arguments: %v\n", envCoveArgs, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := cli.New(app.ServeCommand(), app.NATSCommand())
	cli.Extend(root, "node", computenode.Command())
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	stop()
	return cli.ExitCode(err)
}
