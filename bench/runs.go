package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/samples"
)

// moduleDir keeps built algorithm modules across benchmark runs.
func (r *runner) moduleDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "cove", "bench")
	}
	return filepath.Join(r.dir, "modules")
}

// hello builds the hello sample, the trivial run of the run-path scenarios.
func (r *runner) hello(ctx context.Context) (string, error) {
	return samples.BuildWasm(ctx, "hello", r.moduleDir())
}

// start starts a deployment for scenario name in a new directory; an
// empty s.Wasm means the hello sample.
func (r *runner) start(ctx context.Context, name string, s Setup) (*Env, error) {
	if s.Wasm == "" {
		hello, err := r.hello(ctx)
		if err != nil {
			return nil, err
		}
		s.Wasm = hello
	}
	dir, err := r.tempDir(name)
	if err != nil {
		return nil, err
	}
	return Start(ctx, r.o, dir, s)
}

// latency runs the hello sample over a 1 MiB dataset on one node, one run
// at a time, and reports the percentiles of the time from StartRun to the
// end event of the followed log. A first, untimed run compiles the module.
func latency(ctx context.Context, r *runner, _ map[string]bool) ([]Result, error) {
	const sc = "latency"
	e, err := r.start(ctx, sc, Setup{Nodes: 1, Slots: 4, DatasetBytes: 1 << 20})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	comp, err := e.Computation(ctx)
	if err != nil {
		return nil, err
	}
	if w := e.Run(ctx, comp, nil); w.Err != nil {
		return nil, w.Err
	}
	n := r.size(500, 30)
	r.progress("latency: %d sequential runs", n)
	durs := make([]time.Duration, 0, n)
	cpu := processCPU()
	for i := range n {
		rr := e.Run(ctx, comp, nil)
		if rr.Err != nil {
			return nil, rr.Err
		}
		durs = append(durs, rr.Took)
		if (i+1)%100 == 0 {
			r.progress("latency: %d runs", i+1)
		}
	}
	cpuPerRun := ms(processCPU()-cpu) / float64(n)
	slices.Sort(durs)
	return []Result{
		atMost(sc, "p50", ms(Percentile(durs, 50)), "ms", 25),
		figure(sc, "p95", ms(Percentile(durs, 95)), "ms"),
		atMost(sc, "p99", ms(Percentile(durs, 99)), "ms", 100),
		figure(sc, "runs", float64(n), "runs"),
		figure(sc, "cpu per run (whole process)", cpuPerRun, "ms"),
	}, nil
}

// throughput keeps 64 runs of the hello sample in flight on 1, 10 and 100
// nodes, with the real wasm driver and with a no-op driver registered as
// "wasm" (which leaves the control plane, the agent and the bus alone), and
// reports the steady rate of completions.
func throughput(ctx context.Context, r *runner, _ map[string]bool) ([]Result, error) {
	const sc, inflight = "throughput", 64
	hello, err := r.hello(ctx)
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, drv := range []string{"wasm", "noop"} {
		for _, nodes := range []int{1, 10, 100} {
			if r.o.Quick && nodes == 100 {
				continue
			}
			name := fmt.Sprintf("%s driver, %d nodes", drv, nodes)
			dir, err := r.tempDir(sc)
			if err != nil {
				return out, err
			}
			s := Setup{Nodes: nodes, Slots: max(4, inflight/nodes+1), Wasm: hello, DatasetBytes: 1 << 20}
			if drv == "noop" {
				s.Driver = NoopDriver{}
			}
			r.progress("throughput: %s: starting", name)
			e, err := Start(ctx, r.o, dir, s)
			if err != nil {
				return out, fmt.Errorf("%s: %w", name, err)
			}
			runs, took, cpu, err := sustain(ctx, e, r.size(600, 100), inflight)
			e.Close()
			_ = os.RemoveAll(dir)
			if err != nil {
				return out, fmt.Errorf("%s: %w", name, err)
			}
			rate := steadyRate(runs, inflight)
			target := 150.0
			if drv == "noop" {
				target = 300
			}
			r.progress("throughput: %s: %.1f runs/s (%d runs in %s)", name, rate, len(runs), took.Round(time.Millisecond))
			out = append(out,
				atLeast(sc, name, rate, "runs/s", target),
				figure(sc, name+", cpu per run (whole process)", ms(cpu)/float64(len(runs)), "ms"))
		}
	}
	return out, nil
}

// sustain runs comp n times with inflight runs at once and returns each
// run, the wall time and the process CPU time.
func sustain(ctx context.Context, e *Env, n, inflight int) ([]RunResult, time.Duration, time.Duration, error) {
	comp, err := e.Computation(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	if w := e.Run(ctx, comp, nil); w.Err != nil { // compile, first connections
		return nil, 0, 0, w.Err
	}
	var (
		mu   sync.Mutex
		runs []RunResult
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, inflight)
	cpu := processCPU()
	start := time.Now()
	for range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			rr := e.Run(ctx, comp, nil)
			mu.Lock()
			runs = append(runs, rr)
			mu.Unlock()
		})
	}
	wg.Wait()
	took, used := time.Since(start), processCPU()-cpu
	var failed []error
	for _, rr := range runs {
		if rr.Err != nil {
			failed = append(failed, rr.Err)
		}
	}
	return runs, took, used, errSome(failed, len(runs))
}

// steadyRate is the rate of completions between the inflight-th and the
// inflight-th from last, leaving out the ramp up and the drain; with too
// few runs for that, the overall rate.
func steadyRate(runs []RunResult, inflight int) float64 {
	ends := make([]time.Time, 0, len(runs))
	first := runs[0].Start
	for _, rr := range runs {
		ends = append(ends, rr.End())
		if rr.Start.Before(first) {
			first = rr.Start
		}
	}
	slices.SortFunc(ends, func(a, b time.Time) int { return a.Compare(b) })
	if len(ends) > 3*inflight {
		lo, hi := inflight, len(ends)-inflight
		return float64(hi-lo) / ends[hi].Sub(ends[lo]).Seconds()
	}
	return float64(len(ends)) / ends[len(ends)-1].Sub(first).Seconds()
}

// logs runs, once, a module that prints n numbered lines, follows its log
// live from the run's start with the SDK, checks that every line arrived
// once and in order, and reports the lines per second the follower got.
func logs(ctx context.Context, r *runner, _ map[string]bool) ([]Result, error) {
	const sc = "logs"
	mod, err := buildChatty(ctx, r.moduleDir())
	if err != nil {
		return nil, err
	}
	e, err := r.start(ctx, sc, Setup{Nodes: 1, Slots: 4, Wasm: mod, DatasetBytes: 1 << 10})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	n := int64(r.size(1_000_000, 20_000))
	comp, err := e.Computation(ctx, strconv.FormatInt(n, 10))
	if err != nil {
		return nil, err
	}
	r.progress("logs: one run printing %d lines", n)
	var (
		got, last int64
		bad       error
	)
	rr := e.Run(ctx, comp, func(l runproto.LogLine) error {
		got++
		if bad == nil && (l.Seq != last+1 || l.Text != strconv.FormatInt(l.Seq, 10) || l.Stream != "stdout") {
			bad = fmt.Errorf("line %d after %d: %q on %s", l.Seq, last, l.Text, l.Stream)
		}
		last = l.Seq
		return nil
	})
	switch {
	case rr.Err != nil:
		return nil, rr.Err
	case bad != nil:
		return nil, bad
	case got != n || last != n:
		return nil, fmt.Errorf("the follower got %d lines, up to seq %d, of %d", got, last, n)
	}
	out := []Result{
		atLeast(sc, "lines/s at the follower, run start to end event", float64(n)/rr.Took.Seconds(), "lines/s", 200_000),
		figure(sc, "lines, all received in order", float64(n), "lines"),
	}
	// Where the time went: the algorithm writing (running -> publishing)
	// against the follower catching up after the run ended.
	if evs, err := e.Client.RunEvents(ctx, rr.ID); err == nil {
		at := map[computation.State]time.Time{}
		for _, ev := range evs {
			at[ev.State] = ev.Time
		}
		if t0, t1 := at[computation.Running], at[computation.Publishing]; !t0.IsZero() && t1.After(t0) {
			out = append(out, figure(sc, "lines/s produced (running to publishing)", float64(n)/t1.Sub(t0).Seconds(), "lines/s"))
		}
		if t := at[computation.Succeeded]; !t.IsZero() {
			out = append(out, figure(sc, "follower lag after the run ended", ms(rr.End().Sub(t)), "ms"))
		}
	}
	return out, nil
}

// chattySource prints the numbers 1 to os.Args[1], one a line.
const chattySource = `package main

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

// buildChatty builds the chatty module for wasip1 into dir, once, as
// samples.BuildWasm builds the samples.
func buildChatty(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "chatty-"+strconv.Itoa(len(chattySource))+".wasm")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	work, err := os.MkdirTemp("", "cove-chatty-")
	if err != nil {
		return "", cove.Wrap(err, "cannot create a build directory")
	}
	defer os.RemoveAll(work)
	if err := os.WriteFile(filepath.Join(work, "go.mod"), []byte("module example.com/chatty\n\ngo 1.22\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(work, "main.go"), []byte(chattySource), 0o644); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp := filepath.Join(work, "chatty.wasm")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", tmp, ".")
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0",
		"GOWORK=off", "GOFLAGS=", "GOTOOLCHAIN=local", "GOPROXY=off")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", cove.Errorf(cove.Unavailable, "building the chatty module needs the Go toolchain: %v: %s", err, msg)
	}
	b, err := os.ReadFile(tmp)
	if err != nil {
		return "", err
	}
	return out, os.WriteFile(out, b, 0o644)
}

// Percentile returns the p-th percentile of sorted, nearest rank.
func Percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i, 1)-1]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
