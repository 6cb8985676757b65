package agent_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/agent"
	"github.com/covecompute/cove/agent/agenttest"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sandbox"
)

// linesDriver returns a driver whose algorithm prints "line 1" to
// "line n" on stdout.
func linesDriver(n int) *agenttest.Driver {
	return writerDriver(func(spec sandbox.Spec) {
		for i := range n {
			fmt.Fprintf(spec.Stdout, "line %d\n", i+1)
		}
	})
}

// TestLogsSentAgain: log batches that the control plane does not answer,
// answers unavailable, or that meet no responders are sent again until
// they are stored, each once and in order; the last event counts them all.
func TestLogsSentAgain(t *testing.T) {
	agent.SetLogRequestTimeout(t, 300*time.Millisecond)
	const n = 20_000
	e := newEnv(t)
	var away sync.Once
	m := e.manifest(t, "wasm", "a.wasm", []byte("\x00asm"), nil)
	r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m, Logs: func(b runproto.LogBatch, try int) error {
		first := b.Lines[0].Seq
		switch {
		case first == 1 && try == 1:
			return agenttest.ErrNoAnswer // the agent times out and sends it again
		case first%3 == 0 && try <= 2:
			return cove.Errorf(cove.Unavailable, "the store is down")
		case first > n/2:
			away.Do(func() { e.cp.Away(300 * time.Millisecond) })
		}
		return nil
	}})
	out := e.runAgent(t, testContext(t), r, e.cp.AgentConfig(t, r, "", linesDriver(n)))
	if out.State != computation.Succeeded {
		t.Fatalf("outcome %+v", out)
	}
	s := e.cp.Snapshot(r)
	final, _ := s.Final()
	t.Logf("%d lines in %d batches, %d requests", len(s.Lines), s.Batches, s.LogRequests)
	if len(s.Lines) != n || final.LogLines != n {
		t.Fatalf("%d lines stored, last event counts %d, want %d", len(s.Lines), final.LogLines, n)
	}
	for i, l := range s.Lines {
		if l.Seq != int64(i+1) || l.Text != fmt.Sprintf("line %d", i+1) {
			t.Fatalf("line %d is %d %q", i+1, l.Seq, l.Text)
		}
	}
	if s.LogRequests <= s.Batches+1 {
		t.Errorf("%d requests for %d batches: nothing was sent again", s.LogRequests, s.Batches)
	}
	if len(s.Problems) > 0 {
		t.Errorf("protocol problems: %v", s.Problems)
	}
}

// TestLogsRefused: a batch the control plane refuses is not sent again nor
// counted, and the run goes on.
func TestLogsRefused(t *testing.T) {
	const n = 2000
	e := newEnv(t)
	var refused atomic.Int64
	m := e.manifest(t, "wasm", "a.wasm", []byte("\x00asm"), nil)
	r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m, Logs: func(b runproto.LogBatch, try int) error {
		if b.Lines[0].Seq == 1 {
			if try > 1 {
				t.Errorf("a refused batch was sent %d times", try)
			}
			refused.Store(int64(len(b.Lines)))
			return cove.Errorf(cove.Conflict, "the run has ended")
		}
		return nil
	}})
	out := e.runAgent(t, testContext(t), r, e.cp.AgentConfig(t, r, "", linesDriver(n)))
	if out.State != computation.Succeeded {
		t.Fatalf("outcome %+v", out)
	}
	s := e.cp.Snapshot(r)
	final, _ := s.Final()
	if want := n - refused.Load(); refused.Load() == 0 || int64(len(s.Lines)) != want || final.LogLines != want {
		t.Errorf("%d lines stored, last event counts %d, want %d", len(s.Lines), final.LogLines, want)
	}
}

// TestStopWhileLogsWait: an algorithm whose output waits for a control
// plane that does not store it is stopped at once all the same.
func TestStopWhileLogsWait(t *testing.T) {
	e := newEnv(t)
	m := e.manifest(t, "wasm", "a.wasm", []byte("\x00asm"), nil)
	r := e.cp.AddRun(t, cove.NewID("run"), agenttest.RunSpec{Manifest: m, Logs: func(runproto.LogBatch, int) error {
		return agenttest.ErrNoAnswer
	}})
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	done := make(chan agent.Outcome, 1)
	go func() {
		out, err := agent.Run(ctx, e.cp.AgentConfig(t, r, "", linesDriver(1_000_000)))
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		done <- out
	}()
	e.cp.WaitFor(t, r, time.Minute, "log requests", func(s agenttest.Snapshot) bool { return s.LogRequests >= 16 })
	start := time.Now()
	e.cp.Stop(t, r)
	select {
	case out := <-done:
		if out.State != computation.Stopped {
			t.Errorf("outcome %+v, want stopped", out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not stop")
	}
	t.Logf("stopped in %v", time.Since(start))
	checkNoAgentGoroutines(t)
	if s := e.cp.Snapshot(r); s.LogRequests > 16+4 {
		t.Errorf("%d log requests with none answered: the window is not bounded", s.LogRequests)
	}
}
