package app_test

// Benchmarks of the run path end to end: a real control plane (apptest),
// real dispatch over embedded NATS, real in-process compute nodes that
// enroll over HTTP (computenode.Start), and the real wasm driver, driven
// through the SDK as `cove computation run --follow` drives it. They run on
// SQLite, and on PostgreSQL too when COVE_TEST_DATABASE_URL is set.
//
// A run is "done" when the SDK's log follower (GET /runs/{id}/logs?follow=true,
// server-sent events) returns with the `end` event: no polling, and the
// figure includes what a following client waits for after the run ends.
//
//	go test -run XXX -bench 'BenchmarkRunLatency' -benchtime=200x ./app/
//	go test -run XXX -bench 'BenchmarkRunThroughput' -benchtime=1000x ./app/
//	go test -run XXX -bench 'BenchmarkChattyRunLogs' -benchtime=1000000x ./app/
//
// BenchmarkChattyRunLogs treats b.N as the number of log lines of its one
// run, so -benchtime=Nx sets the line count. cpu-ms/run and cpu-ns/line
// are the CPU time of the whole test process (control plane, nodes, agents
// and client) per unit: on a shared machine they vary less than the rates.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/computenode"
	"github.com/covecompute/cove/dispatch"
	"github.com/covecompute/cove/driver/wasm"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/node"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/samples/samplestest"
	"github.com/covecompute/cove/sandbox"
	"github.com/covecompute/cove/sdk"
)

// Per-run limits of the benchmark computations, and so what one run
// reserves on a node.
const (
	benchRunMemory = 128 << 20
	benchRunDisk   = 64 << 20
)

// benchOpts shape one benchmark deployment.
type benchOpts struct {
	engine apptest.Engine
	nodes  int // in-process compute nodes
	slots  int // runs each node holds at once (its capacity in run limits)
	// driver runs the algorithms on every node under the name "wasm"; nil
	// means one real wasm driver shared by the nodes.
	driver       sandbox.Driver
	wasm         string // the algorithm module
	datasetBytes int
}

// benchEnv is a running deployment with one workspace holding a dataset
// and an algorithm its policy allows.
type benchEnv struct {
	m         *app.Main
	c         *sdk.Client
	ws        string
	algorithm string
	dataset   string
	consumer  computation.ResultConsumer
}

// benchSetup starts a control plane and o.nodes nodes, uploads the dataset
// and the algorithm, and waits until every node is online.
func benchSetup(b *testing.B, o benchOpts) *benchEnv {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := b.TempDir()
	m := apptest.Start(b, apptest.Config(filepath.Join(dir, "server"), o.engine.URL(b)))
	must := func(err error, what string) {
		b.Helper()
		if err != nil {
			b.Fatalf("%s: %v", what, err)
		}
	}

	anon, err := sdk.New(m.URL)
	must(err, "sdk")
	const email, password = "bench@example.com", "correct horse battery"
	_, err = anon.Signup(ctx, identity.SignupInput{Email: email, Name: "Bench", Password: password})
	must(err, "signup")
	_, err = anon.Login(ctx, identity.LoginInput{Email: email, Password: password})
	must(err, "login")
	// A personal access token does not expire during a long benchmark,
	// and a pooled transport keeps 64 concurrent clients off new
	// connections (the default keeps 2 idle per host).
	pat, err := anon.CreateToken(ctx, httpapi.TokenInput{Name: "bench", ExpiresIn: "24h"})
	must(err, "token")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 512, 512
	c, err := sdk.New(m.URL, sdk.WithToken(pat.Secret), sdk.WithHTTPClient(&http.Client{Timeout: time.Minute, Transport: tr}))
	must(err, "sdk")
	me, err := c.Me(ctx)
	must(err, "me")

	ws, err := c.CreateWorkspace(ctx, "bench")
	must(err, "workspace")
	data := benchDataset(o.datasetBytes)
	ds, err := c.UploadDataset(ctx, ws.ID, catalog.DatasetUpload{Name: "data", Format: catalog.FormatFile, FileName: "data.csv"},
		bytes.NewReader(data), int64(len(data)), nil)
	must(err, "dataset")
	_, err = c.SetDatasetPolicy(ctx, ds.ID, catalog.Policy{AllowAnyAlgorithm: true, RequiredTEE: catalog.TEENone})
	must(err, "policy")
	mod, err := os.ReadFile(o.wasm)
	must(err, "module")
	alg, err := c.UploadAlgorithm(ctx, ws.ID, catalog.AlgorithmUpload{Name: "bench", Kind: catalog.KindWasm, FileName: "bench.wasm"},
		bytes.NewReader(mod), int64(len(mod)), nil)
	must(err, "algorithm")
	key, err := age.GenerateX25519Identity()
	must(err, "age key")

	drv := o.driver
	if drv == nil {
		d, err := wasm.New(wasm.Config{CacheDir: filepath.Join(dir, "wasm-cache")})
		must(err, "wasm driver")
		b.Cleanup(func() { _ = d.Close(context.Background()) })
		drv = d
	}
	for i := range o.nodes {
		tok, err := c.CreateEnrollToken(ctx, httpapi.EnrollTokenInput{AutoApprove: true})
		must(err, "enroll token")
		n, err := computenode.Start(ctx, computenode.Config{
			ServerURL: m.URL,
			Token:     tok.Token,
			Name:      fmt.Sprintf("bench-%d", i),
			DataDir:   filepath.Join(dir, fmt.Sprintf("node-%d", i)),
			Capacity: runproto.Resources{
				CPUs:        float64(o.slots),
				MemoryBytes: int64(o.slots) * benchRunMemory,
				DiskBytes:   int64(o.slots) * benchRunDisk,
			},
			Drivers: map[string]sandbox.Driver{"wasm": drv},
			Log:     benchLogger(),
		})
		must(err, "start node")
		b.Cleanup(func() { _ = n.Close() })
	}
	for {
		nodes, _, err := c.ListNodes(ctx, sdk.NodeFilter{}, sdk.ListOptions{Limit: 100})
		must(err, "list nodes")
		up := 0
		for _, n := range nodes {
			if n.Online && n.State == node.Active {
				up++
			}
		}
		if up == o.nodes {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("%d of %d nodes online", up, o.nodes)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &benchEnv{
		m: m, c: c, ws: ws.ID, algorithm: alg.ID, dataset: ds.ID,
		consumer: computation.ResultConsumer{UserID: me.ID, Recipient: key.Recipient().String()},
	}
}

// computation creates a computation of the algorithm over the dataset.
func (e *benchEnv) computation(b *testing.B, args ...string) string {
	b.Helper()
	c, err := e.c.CreateComputation(context.Background(), e.ws, computation.Spec{
		AlgorithmID:     e.algorithm,
		Args:            args,
		Datasets:        []computation.DatasetRef{{Name: "data", DatasetID: e.dataset}},
		ResultConsumers: []computation.ResultConsumer{e.consumer},
		Limits:          computation.Limits{CPUs: 1, MemoryBytes: benchRunMemory, DiskBytes: benchRunDisk, MaxDurationSeconds: 600},
	})
	if err != nil {
		b.Fatalf("create computation: %v", err)
	}
	return c.ID
}

// benchRun is one timed run.
type benchRun struct {
	id   string
	took time.Duration // StartRun called to the log follower's end event
	end  time.Time
	err  error
}

// run starts a run and follows its log until the end event; fn sees each
// line. An error is a run that did not succeed.
func (e *benchEnv) run(ctx context.Context, compID string, fn func(runproto.LogLine) error) benchRun {
	start := time.Now()
	r, err := e.c.StartRun(ctx, compID)
	if err != nil {
		return benchRun{err: fmt.Errorf("start run: %w", err)}
	}
	if fn == nil {
		fn = func(runproto.LogLine) error { return nil }
	}
	end, err := e.c.Logs(ctx, r.ID, sdk.LogOptions{Follow: true}, fn)
	br := benchRun{id: r.ID, took: time.Since(start), end: time.Now()}
	switch {
	case err != nil:
		br.err = fmt.Errorf("follow run %s: %w", r.ID, err)
	case end == nil:
		br.err = fmt.Errorf("run %s: the log stream ended without an end event", r.ID)
	case end.State != computation.Succeeded:
		br.err = fmt.Errorf("run %s ended %s (%s): %s", r.ID, end.State, end.Reason, end.Message)
	}
	return br
}

// mustRun runs once and fails b unless the run succeeded.
func (e *benchEnv) mustRun(b *testing.B, compID string) benchRun {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := e.run(ctx, compID, nil)
	if r.err != nil {
		b.Fatal(r.err)
	}
	return r
}

// BenchmarkRunLatency runs the hello sample over a 1 MiB dataset on one
// node, one run at a time, and reports the percentiles of the time from
// StartRun to the end event of the followed log. Run it with
// -benchtime=200x. A first, untimed run compiles the module.
func BenchmarkRunLatency(b *testing.B) {
	hello := samplestest.MustBuildWasm(b, "hello")
	for _, eng := range apptest.Engines() {
		b.Run(eng.Name, func(b *testing.B) {
			e := benchSetup(b, benchOpts{engine: eng, nodes: 1, slots: 4, wasm: hello, datasetBytes: 1 << 20})
			comp := e.computation(b)
			e.mustRun(b, comp) // warm up: compile, first connections

			runs := make([]benchRun, 0, b.N)
			cpu := benchCPU()
			for b.Loop() {
				runs = append(runs, e.mustRun(b, comp))
			}
			benchReportCPU(b, cpu, float64(len(runs)), "cpu-ms/run")
			durs := make([]time.Duration, len(runs))
			for i, r := range runs {
				durs[i] = r.took
			}
			benchReportLatency(b, durs)
			benchPhases(b, e, runs)
		})
	}
}

// BenchmarkRunThroughput keeps 64 runs of the hello sample in flight and
// reports the runs completed per second, over b.N runs: on one node that
// can hold all 64, and on 20 nodes of 4 runs each; with the real wasm
// driver, and with a no-op driver registered as "wasm" to measure the
// control plane, the agent and the bus alone. Run it with
// -benchtime=1000x or so: the first and last 64 runs ramp up and drain.
func BenchmarkRunThroughput(b *testing.B) {
	const inflight = 64
	hello := samplestest.MustBuildWasm(b, "hello")
	for _, eng := range apptest.Engines() {
		for _, drv := range []string{"wasm", "noop"} {
			for _, nodes := range []int{1, 20} {
				b.Run(fmt.Sprintf("%s/driver=%s/nodes=%d", eng.Name, drv, nodes), func(b *testing.B) {
					o := benchOpts{engine: eng, nodes: nodes, slots: inflight, wasm: hello, datasetBytes: 1 << 20}
					if nodes > 1 {
						o.slots = 4
					}
					if drv == "noop" {
						o.driver = benchNoopDriver{}
					}
					e := benchSetup(b, o)
					comp := e.computation(b)
					e.mustRun(b, comp)

					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
					defer cancel()
					var (
						mu   sync.Mutex
						runs []benchRun
						wg   sync.WaitGroup
					)
					sem := make(chan struct{}, inflight)
					backlog := benchWatchEvents(b, e)
					cpu := benchCPU()
					start := time.Now()
					// b.Loop only launches: each iteration waits for a free
					// slot and starts one run; the clock stops when the last
					// run has been followed to its end.
					for b.Loop() {
						sem <- struct{}{}
						wg.Go(func() {
							defer func() { <-sem }()
							r := e.run(ctx, comp, nil)
							mu.Lock()
							runs = append(runs, r)
							mu.Unlock()
						})
					}
					wg.Wait()
					elapsed := time.Since(start)
					benchReportCPU(b, cpu, float64(len(runs)), "cpu-ms/run")
					b.ReportMetric(float64(backlog()), "max-event-backlog")
					// A run that did not succeed fails the benchmark, after
					// the figures: they say what load it failed under.
					var failed []error
					durs := make([]time.Duration, 0, len(runs))
					for _, r := range runs {
						if r.err != nil {
							failed = append(failed, r.err)
							continue
						}
						durs = append(durs, r.took)
					}
					if len(failed) > 0 {
						b.ReportMetric(float64(len(failed)), "failed-runs")
						defer b.Errorf("%d of %d runs did not succeed; the first: %v", len(failed), len(runs), failed[0])
					}
					n := float64(len(runs))
					b.ReportMetric(float64(elapsed.Nanoseconds())/n, "ns/op")
					b.ReportMetric(n/elapsed.Seconds(), "runs/s")
					// The steady state: completions between the 64th and
					// the 64th-from-last, when there are enough of them.
					ends := make([]time.Time, 0, len(runs))
					for _, r := range runs {
						ends = append(ends, r.end)
					}
					slices.SortFunc(ends, func(a, b time.Time) int { return a.Compare(b) })
					if len(ends) > 3*inflight {
						lo, hi := inflight, len(ends)-inflight
						b.ReportMetric(float64(hi-lo)/ends[hi].Sub(ends[lo]).Seconds(), "steady-runs/s")
					}
					benchReportLatency(b, durs)
					benchPhases(b, e, runs)
					benchLogConsumers(b, e)
				})
			}
		}
	}
}

// benchWatchEvents samples, every 50 ms until the returned function is
// called, how many run events wait in the control plane's durable RUN_EVENTS
// consumer, which applies them one at a time; the function returns the
// most seen.
func benchWatchEvents(b *testing.B, e *benchEnv) func() uint64 {
	js, err := jetstream.New(e.m.Bus.Conn())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var most uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			c, err := js.Consumer(ctx, natsbus.StreamRunEvents, dispatch.EventsConsumer)
			if err != nil {
				continue
			}
			if info := c.CachedInfo(); info.NumPending+uint64(info.NumAckPending) > most {
				most = info.NumPending + uint64(info.NumAckPending)
			}
		}
	}()
	return func() uint64 {
		cancel()
		<-done
		return most
	}
}

// benchLogConsumers logs how many consumers the RUN_LOGS stream holds: each
// log follower makes one, and the server refuses more than 1,000 per stream
// by default.
func benchLogConsumers(b *testing.B, e *benchEnv) {
	js, err := jetstream.New(e.m.Bus.Conn())
	if err != nil {
		b.Log(err)
		return
	}
	s, err := js.Stream(context.Background(), natsbus.StreamRunLogs)
	if err != nil {
		b.Log(err)
		return
	}
	b.Logf("%s holds %d consumers after the benchmark", natsbus.StreamRunLogs, s.CachedInfo().State.Consumers)
}

// BenchmarkChattyRunLogs runs, once per call, a module that prints b.N
// numbered lines, and follows its log live from the run's start with the
// SDK. It checks that every line arrived, once, in order, and reports the
// lines per second the follower received. Run it with
// -benchtime=1000000x for a million lines.
func BenchmarkChattyRunLogs(b *testing.B) {
	mod := benchBuildChatty(b)
	for _, eng := range apptest.Engines() {
		b.Run(eng.Name, func(b *testing.B) {
			e := benchSetup(b, benchOpts{engine: eng, nodes: 1, slots: 4, wasm: mod, datasetBytes: 1 << 10})
			b.Run("follow", func(b *testing.B) {
				comp := e.computation(b, strconv.Itoa(b.N))
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
				defer cancel()
				var (
					n, last int64
					first   time.Time
					bad     error
				)
				b.ResetTimer()
				cpu := benchCPU()
				r := e.run(ctx, comp, func(l runproto.LogLine) error {
					if n == 0 {
						first = time.Now()
					}
					n++
					if bad == nil && (l.Seq != last+1 || l.Text != strconv.FormatInt(l.Seq, 10) || l.Stream != "stdout") {
						bad = fmt.Errorf("line %d after %d: %q on %s", l.Seq, last, l.Text, l.Stream)
					}
					last = l.Seq
					return nil
				})
				b.StopTimer()
				benchReportCPU(b, cpu, float64(b.N), "cpu-ns/line")
				if r.err != nil {
					b.Fatal(r.err)
				}
				if bad != nil {
					b.Fatal(bad)
				}
				if n != int64(b.N) || last != int64(b.N) {
					b.Fatalf("the follower got %d lines, up to seq %d, of %d", n, last, b.N)
				}
				b.ReportMetric(float64(n)/r.took.Seconds(), "lines/s")
				if n > 1 {
					b.ReportMetric(float64(n-1)/r.end.Sub(first).Seconds(), "follow-lines/s")
				}
				// Where the time went: the algorithm writing (running ->
				// publishing) against the follower catching up after the
				// run ended.
				if evs, err := e.c.RunEvents(context.Background(), r.id); err == nil {
					at := map[computation.State]time.Time{}
					for _, ev := range evs {
						at[ev.State] = ev.Time
					}
					if t0, t1 := at[computation.Running], at[computation.Publishing]; !t0.IsZero() && !t1.IsZero() {
						b.ReportMetric(float64(n)/t1.Sub(t0).Seconds(), "produced-lines/s")
					}
					if t := at[computation.Succeeded]; !t.IsZero() {
						b.ReportMetric(float64(r.end.Sub(t).Milliseconds()), "lag-after-end-ms")
					}
				}
			})
		})
	}
}

// benchReportLatency reports the percentiles of run durations.
func benchReportLatency(b *testing.B, durs []time.Duration) {
	if len(durs) == 0 {
		return
	}
	slices.Sort(durs)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(benchPercentile(durs, 50)), "p50-ms")
	b.ReportMetric(ms(benchPercentile(durs, 99)), "p99-ms")
	b.ReportMetric(ms(durs[len(durs)-1]), "max-ms")
}

// benchPercentile returns the p-th percentile of sorted, nearest rank.
func benchPercentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i, 1)-1]
}

// benchPhases logs how long runs spent in each state, from their events,
// and the client's share: StartRun to the queued event, and the succeeded
// event to the follower's end.
func benchPhases(b *testing.B, e *benchEnv, runs []benchRun) {
	phases := map[string][]time.Duration{}
	var order []string
	add := func(name string, d time.Duration) {
		if _, ok := phases[name]; !ok {
			order = append(order, name)
		}
		phases[name] = append(phases[name], d)
	}
	for _, r := range runs {
		if r.err != nil {
			continue
		}
		evs, err := e.c.RunEvents(context.Background(), r.id)
		if err != nil || len(evs) == 0 {
			b.Logf("events of %s: %v", r.id, err)
			return
		}
		add("client->queued", evs[0].Time.Sub(r.end.Add(-r.took)))
		for i := 1; i < len(evs); i++ {
			add(string(evs[i-1].State), evs[i].Time.Sub(evs[i-1].Time))
		}
		add("ended->client", r.end.Sub(evs[len(evs)-1].Time))
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	var p50, p99 strings.Builder
	for _, name := range order {
		d := phases[name]
		slices.Sort(d)
		fmt.Fprintf(&p50, " %s=%.2f", name, ms(benchPercentile(d, 50)))
		fmt.Fprintf(&p99, " %s=%.2f", name, ms(benchPercentile(d, 99)))
	}
	b.Logf("ms in each state over %d runs, p50:%s", len(runs), p50.String())
	b.Logf("ms in each state over %d runs, p99:%s", len(runs), p99.String())
}

// benchCPU returns the CPU time (user + system) the test process has used
// so far, from /proc/self/stat, or -1 where there is none (not Linux). The
// whole deployment runs in this process, so the CPU time per run is a
// figure that other load on the machine does not skew, unlike runs/s.
func benchCPU() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return -1
	}
	// Fields after the command name, which is in parentheses: state is
	// the first, utime the 12th and stime the 13th, in clock ticks
	// (USER_HZ, 100 on Linux).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	k, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(u+k) * 10 * time.Millisecond
}

// benchReportCPU reports the CPU time used since start per unit.
func benchReportCPU(b *testing.B, start time.Duration, n float64, unit string) {
	if start < 0 || n <= 0 {
		return
	}
	used := benchCPU() - start
	switch unit {
	case "cpu-ms/run":
		b.ReportMetric(float64(used.Microseconds())/1000/n, unit)
	case "cpu-ns/line":
		b.ReportMetric(float64(used.Nanoseconds())/n, unit)
	}
}

// benchDataset returns size bytes of CSV.
func benchDataset(size int) []byte {
	var buf bytes.Buffer
	buf.WriteString("id,value\n")
	for i := 0; buf.Len() < size; i++ {
		fmt.Fprintf(&buf, "%d,%d\n", i, i*7919%1000003)
	}
	return buf.Bytes()[:size]
}

// benchLogger shows the nodes' warnings, which a benchmark should not
// cause.
func benchLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// benchNoopDriver is a sandbox driver that runs nothing: it writes one
// output file and one log line, as the hello sample does, and returns.
type benchNoopDriver struct{}

func (benchNoopDriver) Name() string     { return "wasm" }
func (benchNoopDriver) Kinds() []string  { return []string{"wasm"} }
func (benchNoopDriver) Available() error { return nil }

func (benchNoopDriver) Run(_ context.Context, s sandbox.Spec) (sandbox.Result, error) {
	start := time.Now()
	if err := os.WriteFile(filepath.Join(s.OutputDir, "hello.txt"), []byte("hello from a no-op sandbox\n"), 0o644); err != nil {
		return sandbox.Result{}, err
	}
	_, _ = io.WriteString(s.Stdout, "hello from a no-op sandbox\n")
	return sandbox.Result{Wall: time.Since(start)}, nil
}

// benchChattySource prints the numbers 1 to os.Args[1], one a line.
const benchChattySource = `package main

import (
	"bufio"
	"os"
	"strconv"
)

func main() {
	n, err := strconv.Atoi(os.Args[1])
	if err != nil {
		os.Exit(64)
	}
	w := bufio.NewWriterSize(os.Stdout, 64<<10)
	var buf []byte
	for i := 1; i <= n; i++ {
		buf = strconv.AppendInt(buf[:0], int64(i), 10)
		buf = append(buf, '\n')
		w.Write(buf)
	}
	if err := w.Flush(); err != nil {
		os.Exit(1)
	}
}
`

// benchBuildChatty builds the chatty module for wasip1, as samples.BuildWasm
// builds the samples.
func benchBuildChatty(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/chatty\n\ngo 1.22\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(benchChattySource), 0o644); err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "chatty.wasm")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0",
		"GOWORK=off", "GOFLAGS=", "GOTOOLCHAIN=local", "GOPROXY=off")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build the chatty module: %v\n%s", err, msg)
	}
	return out
}
