// Package bench measures Cove's performance against the targets in
// docs/performance.md: `cove bench` runs its scenarios and prints a table
// (or JSON), and `go test -bench . ./bench/` runs the same scenario code at
// small sizes.
//
// Every scenario runs the real parts: a real control plane (app.Main) in a
// temporary data directory, with SQLite and an embedded NATS server unless
// the configuration names PostgreSQL or an external NATS; real compute
// nodes (computenode.Start) in this process; runs driven through the SDK
// as `cove computation run --follow` drives them. The heartbeat and memory
// scenarios start `cove serve --dev` as a child process and measure it from
// outside (/proc/PID/stat and /proc/PID/status), with the simulated nodes'
// heartbeats published from another child, so that neither the harness
// nor the load generator is counted.
package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/config"
)

// Options configure a benchmark run.
type Options struct {
	// Config is the base configuration of the control planes the scenarios
	// start. Its data directory and listeners are replaced by temporary
	// ones; a PostgreSQL URL is used to create one scratch database per
	// control plane, dropped afterwards.
	Config config.Config
	// ConfigFile and DatabaseURL are passed on to the `cove serve` children
	// of the heartbeat and memory scenarios.
	ConfigFile string
	// Quick shrinks every scenario to a smoke run of a few seconds.
	Quick bool
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
	// Exe is the cove binary the child processes run. Default: this
	// process's executable.
	Exe string
	// Nodes is how many nodes the heartbeat and memory scenarios simulate;
	// 0 means 10,000 (500 with Quick).
	Nodes int
	// Env is added to the environment of the child processes.
	Env []string
	// Dir holds the scenarios' data directories. Default: a new directory
	// under os.TempDir(), removed at the end.
	Dir string
}

// Result is one figure.
type Result struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	// Target is the goal as text ("≤ 25"), empty when there is none;
	// TargetOp ("<=", ">=" or "<") and TargetValue say it for programs.
	Target      string  `json:"target,omitempty"`
	TargetOp    string  `json:"target_op,omitempty"`
	TargetValue float64 `json:"target_value,omitempty"`
	// Pass says whether Value meets Target; absent without a target.
	Pass *bool `json:"pass,omitempty"`
}

// Machine says where figures were taken.
type Machine struct {
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	Go     string `json:"go"`
	OS     string `json:"os"`
	Engine string `json:"engine"` // sqlite or postgres
	NATS   string `json:"nats"`   // embedded or external
	// Load is the 1-minute load average when the run started: other work
	// on the machine skews wall-clock figures.
	Load string    `json:"load,omitempty"`
	Time time.Time `json:"time"`
}

// Report is the outcome of a benchmark run.
type Report struct {
	Machine Machine  `json:"machine"`
	Quick   bool     `json:"quick"`
	Results []Result `json:"results"`
	// Errors are the scenarios that could not finish, by name.
	Errors map[string]string `json:"errors,omitempty"`
}

// Scenario is one named measurement.
type Scenario struct {
	Name string
	Doc  string
	// group names the function that measures it; scenarios of one group
	// are measured together.
	group string
}

// scenarioFuncs run a group of scenarios; want says which of the group's
// scenarios were asked for.
var scenarioFuncs = map[string]func(ctx context.Context, r *runner, want map[string]bool) ([]Result, error){
	"latency":    latency,
	"throughput": throughput,
	"placement":  placement,
	"fleet":      fleet,
	"datapath":   datapath,
	"logs":       logs,
	"api":        api,
}

// Scenarios returns every scenario in the order a run measures them.
func Scenarios() []Scenario {
	return []Scenario{
		{"latency", "run request to succeeded of a trivial wasm run over a 1 MiB dataset, one at a time", "latency"},
		{"throughput", "sustained runs/s with 1, 10 and 100 in-process nodes, real wasm driver and no-op driver", "throughput"},
		{"placement", "scheduler placement decisions/s with 10,000 registered nodes", "placement"},
		{"heartbeat", "CPU share of `cove serve --dev` with 10,000 enrolled nodes heartbeating", "fleet"},
		{"memory", "RSS of `cove serve --dev` idle and with 10,000 nodes registered", "fleet"},
		{"datapath", "upload of a 1 GiB dataset and its delivery into a sandbox, against sha256sum", "datapath"},
		{"logs", "log lines/s from one run to a live follower, none lost", "logs"},
		{"api", "authenticated list and get under 64 concurrent clients", "api"},
	}
}

// Run measures the named scenarios (all when names is empty) and returns
// what it measured. A scenario that fails is recorded in Report.Errors and
// the others still run. Errors: Invalid for an unknown scenario name.
func Run(ctx context.Context, o Options, names ...string) (*Report, error) {
	all := Scenarios()
	want := map[string]bool{}
	for _, n := range names {
		if !slices.ContainsFunc(all, func(s Scenario) bool { return s.Name == n }) {
			known := make([]string, len(all))
			for i, s := range all {
				known[i] = s.Name
			}
			return nil, cove.Errorf(cove.Invalid, "unknown scenario %q; pick one of %s", n, strings.Join(known, ", "))
		}
		want[n] = true
	}
	if len(want) == 0 {
		for _, s := range all {
			want[s.Name] = true
		}
	}
	r, err := newRunner(o)
	if err != nil {
		return nil, err
	}
	defer r.close()
	rep := &Report{Machine: machine(o.Config), Quick: o.Quick}
	done := map[string]bool{}
	for _, s := range all {
		if !want[s.Name] || done[s.group] {
			continue
		}
		done[s.group] = true
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		start := time.Now()
		r.progress("== %s", s.group)
		res, err := scenarioFuncs[s.group](ctx, r, want)
		rep.Results = append(rep.Results, res...)
		if err != nil {
			if rep.Errors == nil {
				rep.Errors = map[string]string{}
			}
			rep.Errors[s.group] = err.Error()
			r.progress("%s failed: %v", s.group, err)
		}
		r.progress("== %s done in %s", s.group, time.Since(start).Round(time.Millisecond))
	}
	return rep, ctx.Err() // interrupted: the report holds what was measured
}

// runner is what scenarios share.
type runner struct {
	o       Options
	dir     string
	cleanup func()
}

func newRunner(o Options) (*runner, error) {
	r := &runner{o: o, dir: o.Dir, cleanup: func() {}}
	if r.o.Progress == nil {
		r.o.Progress = io.Discard
	}
	if r.o.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, cove.Wrap(err, "cannot find the cove binary for the child processes")
		}
		r.o.Exe = exe
	}
	if r.dir == "" {
		dir, err := os.MkdirTemp("", "cove-bench-")
		if err != nil {
			return nil, cove.Wrap(err, "cannot create a temporary directory")
		}
		r.dir = dir
		r.cleanup = func() { _ = os.RemoveAll(dir) }
	}
	return r, nil
}

func (r *runner) close() { r.cleanup() }

// progress writes one line of progress.
func (r *runner) progress(format string, args ...any) {
	fmt.Fprintf(r.o.Progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// size picks the full or the quick size of something.
func (r *runner) size(full, quick int) int {
	if r.o.Quick {
		return quick
	}
	return full
}

// tempDir returns a new directory under the run's directory.
func (r *runner) tempDir(name string) (string, error) {
	dir, err := os.MkdirTemp(r.dir, name+"-")
	if err != nil {
		return "", cove.Wrap(err, "cannot create a temporary directory")
	}
	return dir, nil
}

// atMost, atLeast and below make a result with a target.
func atMost(scenario, metric string, v float64, unit string, limit float64) Result {
	return target(figure(scenario, metric, v, unit), "<=", "≤", limit, v <= limit)
}

func atLeast(scenario, metric string, v float64, unit string, limit float64) Result {
	return target(figure(scenario, metric, v, unit), ">=", "≥", limit, v >= limit)
}

func below(scenario, metric string, v float64, unit string, limit float64) Result {
	return target(figure(scenario, metric, v, unit), "<", "<", limit, v < limit)
}

func target(r Result, op, sign string, limit float64, pass bool) Result {
	r.Target, r.TargetOp, r.TargetValue, r.Pass = sign+" "+num(limit), op, limit, &pass
	return r
}

func figure(scenario, metric string, v float64, unit string) Result {
	return Result{Scenario: scenario, Metric: metric, Value: v, Unit: unit}
}

// num formats a figure with three significant digits at most after the
// point, without trailing zeros.
func num(v float64) string {
	switch {
	case v >= 1000 || v == float64(int64(v)):
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.1f", v), "0"), ".")
	default:
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
	}
}

// machine describes this machine and the configured engines.
func machine(c config.Config) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		Engine: "sqlite", NATS: "embedded", Time: time.Now().UTC().Truncate(time.Second)}
	if strings.HasPrefix(c.Database.URL, "postgres") {
		m.Engine = "postgres"
	}
	if c.NATS.URL != "" {
		m.NATS = "external"
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.Load = f[0]
		}
	}
	m.CPU = cmp.Or(m.CPU, runtime.GOARCH)
	return m
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // "<=" stays readable
	return enc.Encode(rep)
}

// WriteMarkdown writes the report as a markdown table, the machine first.
func (rep *Report) WriteMarkdown(w io.Writer) error {
	m := rep.Machine
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "Machine: %s, %d cores, %s, %s; %s, %s NATS; load %s; %s", m.CPU, m.Cores, m.Go, m.OS, m.Engine, m.NATS,
		cmp.Or(m.Load, "?"), m.Time.Format(time.RFC3339))
	if rep.Quick {
		fmt.Fprint(bw, "; --quick (smoke sizes, not comparable)")
	}
	fmt.Fprint(bw, "\n\n| scenario | metric | value | unit | target | pass |\n|---|---|---:|---|---|---|\n")
	for _, r := range rep.Results {
		pass := ""
		if r.Pass != nil {
			pass = map[bool]string{true: "yes", false: "**no**"}[*r.Pass]
		}
		fmt.Fprintf(bw, "| %s | %s | %s | %s | %s | %s |\n", r.Scenario, r.Metric, num(r.Value), r.Unit, r.Target, pass)
	}
	for _, name := range slices.Sorted(maps.Keys(rep.Errors)) {
		fmt.Fprintf(bw, "\n%s failed: %s\n", name, rep.Errors[name])
	}
	return bw.Flush()
}
