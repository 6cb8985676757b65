package app_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/cli"
)

func TestNATSInitCommand(t *testing.T) {
	t.Parallel()
	run := func(args ...string) (string, int) {
		root := cli.New(app.ServeCommand(), app.NATSCommand())
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		err := root.Execute()
		return out.String(), cli.ExitCode(err)
	}
	dir := filepath.Join(t.TempDir(), "nats")
	out, code := run("nats", "init", dir, "--listen", "127.0.0.1:14333")
	if code != cli.ExitOK {
		t.Fatalf("nats init: exit %d\n%s", code, out)
	}
	for _, want := range []string{
		"nats-server -c " + filepath.Join(dir, "nats-server.conf"),
		"cove serve --nats-url nats://127.0.0.1:14333 --nats-operator-seed " + filepath.Join(dir, "operator.nk") +
			" --nats-system-creds " + filepath.Join(dir, "system.creds") + " --nats-account-seed " + filepath.Join(dir, "account.nk"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"existing deployment", []string{"nats", "init", dir}, cli.ExitConflict, "already exists"},
		{"bad listen address", []string{"nats", "init", t.TempDir(), "--listen", "4222"}, cli.ExitUsage, "not host:port"},
		{"no directory", []string{"nats", "init"}, cli.ExitUsage, "arg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code := run(tt.args...)
			if code != tt.code || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, want %d with %q:\n%s", code, tt.code, tt.want, out)
			}
		})
	}
}
