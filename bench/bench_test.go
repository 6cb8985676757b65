package bench_test

// The scenarios of `cove bench`, at the sizes of `cove bench --quick`:
//
//	go test -run XXX -bench . -benchtime=1x ./bench/
//	go test -run XXX -bench 'Scenarios/latency' -benchtime=1x ./bench/
//
// Each scenario runs once whatever b.N is; its figures are reported as
// metrics named after them. They run on SQLite, and on PostgreSQL too
// when COVE_TEST_DATABASE_URL is set. The heartbeat and memory scenarios
// run this test binary as `cove serve --dev` and as the heartbeat
// publisher (see TestMain).

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/bench"
	"github.com/covecompute/cove/cli"
	"github.com/covecompute/cove/config"
)

// childEnv makes this test binary behave as the cove binary.
const childEnv = "COVE_BENCH_TEST_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		root := cli.New(app.ServeCommand(), bench.Command())
		root.SetArgs(os.Args[1:])
		os.Exit(cli.ExitCode(root.ExecuteContext(context.Background())))
	}
	os.Exit(m.Run())
}

func BenchmarkScenarios(b *testing.B) {
	for _, e := range apptest.Engines() {
		for _, s := range bench.Scenarios() {
			b.Run(e.Name+"/"+s.Name, func(b *testing.B) {
				cfg := config.Default()
				if e.Name == "postgres" {
					cfg.Database.URL = os.Getenv(apptest.PostgresEnv)
				}
				var rep *bench.Report
				for b.Loop() {
					var err error
					rep, err = bench.Run(context.Background(), bench.Options{
						Config: cfg, Quick: true, Exe: os.Args[0], Env: []string{childEnv + "=1"}, Dir: b.TempDir(),
					}, s.Name)
					if err != nil {
						b.Fatal(err)
					}
					if len(rep.Errors) > 0 {
						b.Fatal(rep.Errors)
					}
				}
				for _, r := range rep.Results {
					b.ReportMetric(r.Value, unit(r.Metric+" "+r.Unit))
				}
			})
		}
	}
}

// unit turns a metric's name into a benchmark unit, which has no spaces:
// words joined by dashes.
func unit(s string) string {
	words := strings.FieldsFunc(s, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '/' && r != '%'
	})
	return strings.Join(words, "-")
}

func TestUnknownScenario(t *testing.T) {
	_, err := bench.Run(context.Background(), bench.Options{Config: config.Default()}, "latencyy")
	if cove.ErrorCode(err) != cove.Invalid || !strings.Contains(err.Error(), "latency, throughput") {
		t.Fatalf("error %v, want invalid naming the scenarios", err)
	}
}

// TestPlacement runs the placement scenario, which needs no server, and
// checks the report in both forms.
func TestPlacement(t *testing.T) {
	rep, err := bench.Run(context.Background(), bench.Options{Config: config.Default(), Quick: true, Dir: t.TempDir()}, "placement")
	if err != nil || len(rep.Errors) > 0 {
		t.Fatal(err, rep.Errors)
	}
	if len(rep.Results) == 0 || rep.Results[0].Pass == nil || rep.Results[0].Value <= 0 || rep.Results[0].Target != "≥ 20000" ||
		rep.Results[0].TargetOp != ">=" || rep.Results[0].TargetValue != 20_000 {
		t.Fatalf("results %+v", rep.Results)
	}
	if rep.Machine.Cores == 0 || rep.Machine.Engine != "sqlite" || rep.Machine.NATS != "embedded" {
		t.Fatalf("machine %+v", rep.Machine)
	}
	var md, js bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil || !strings.Contains(md.String(), "| placement | decisions/s") {
		t.Fatalf("markdown %v:\n%s", err, md.String())
	}
	if err := rep.WriteJSON(&js); err != nil || !strings.Contains(js.String(), `"target_op": ">="`) {
		t.Fatalf("json %v:\n%s", err, js.String())
	}
}

func TestCommandRejects(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"bad output", []string{"bench", "-o", "yaml", "--scenario", "placement"}, "-o must be table or json"},
		{"negative nodes", []string{"bench", "--nodes", "-1"}, "--nodes must not be negative"},
		{"unknown scenario", []string{"bench", "--scenario", "nope"}, `unknown scenario "nope"`},
		{"publisher without nodes", []string{"bench", "heartbeats"}, "--nodes must name the node list"},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := cli.New(bench.Command())
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			root.SetArgs(c.args)
			err := root.ExecuteContext(context.Background())
			if err == nil || !strings.Contains(err.Error()+out.String(), c.want) {
				t.Fatalf("error %v, output %q; want %q", err, out.String(), c.want)
			}
		})
	}
}

func TestPublishRejectsBadNodeLists(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"empty": "", "not json": "node_1\n"} {
		t.Run(name, func(t *testing.T) {
			path := dir + "/" + strings.ReplaceAll(name, " ", "_")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			err := bench.Publish(context.Background(), path, time.Second, io.Discard)
			if cove.ErrorCode(err) != cove.Invalid {
				t.Fatalf("error %v, want invalid", err)
			}
		})
	}
	if err := bench.Publish(context.Background(), dir+"/missing", time.Second, io.Discard); cove.ErrorCode(err) != cove.Invalid {
		t.Fatalf("missing file: %v", err)
	}
}
