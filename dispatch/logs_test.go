package dispatch_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/dispatch"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
)

// TestLogRequests: the control plane stores a log batch only when it is
// asked for an answer in the run's own inbox, stores a batch sent again
// once and answers it again, and refuses malformed batches and batches of
// runs that have ended.
func TestLogRequests(t *testing.T) {
	h := newHarness(t)
	f := h.newRun(computation.Running, "", 10, "none")
	other := h.newRun(computation.Running, "", 10, "none")
	a, b := h.agent(f.run.ID), h.agent(other.run.ID)
	batch := logBatch(1, 5)

	// A reply subject in another run's inbox gets no answer, and neither
	// it nor a batch without a reply subject is stored.
	forged := natsbus.RunInboxPrefix(other.run.ID) + ".forged"
	sub, err := b.nc.SubscribeSync(forged)
	if err != nil {
		t.Fatal(err)
	}
	b.nc.Flush()
	if err := a.nc.PublishRequest(natsbus.RunLogs(f.run.ID), forged, batch); err != nil {
		t.Fatal(err)
	}
	if err := a.nc.Publish(natsbus.RunLogs(f.run.ID), logBatch(6, 10)); err != nil {
		t.Fatal(err)
	}
	a.nc.Flush()
	if m, err := sub.NextMsg(500 * time.Millisecond); err == nil {
		t.Fatalf("the control plane answered a log batch into another run's inbox: %s", m.Data)
	}
	if n := h.storedLogs(f.run.ID); n != 0 {
		t.Fatalf("%d log messages stored without an answer to the run's inbox", n)
	}

	// A batch sent again, as after a lost answer, is stored once.
	for range 3 {
		if err := a.replyErr(a.requestTimeout(natsbus.RunLogs(f.run.ID), batch, wait)); err != nil {
			t.Fatalf("log batch: %v", err)
		}
	}
	if n := h.storedLogs(f.run.ID); n != 1 {
		t.Errorf("a batch sent three times is stored %d times", n)
	}

	for name, data := range map[string][]byte{
		"not JSON":              []byte("not json"),
		"no lines":              []byte(`{"lines":[]}`),
		"line 0":                []byte(`{"lines":[{"seq":0,"stream":"stdout","text":"x"}]}`),
		"a gap":                 []byte(`{"lines":[{"seq":7,"stream":"stdout","text":"x"},{"seq":9,"stream":"stdout","text":"y"}]}`),
		"backwards":             []byte(`{"lines":[{"seq":7,"stream":"stdout","text":"x"},{"seq":6,"stream":"stdout","text":"y"}]}`),
		"an unknown stream":     []byte(`{"lines":[{"seq":7,"stream":"stdin","text":"x"}]}`),
		"more than 4,096 lines": logBatch(6, 4200),
		"a text not a string":   []byte(`{"lines":[{"seq":7,"stream":"stdout","text":5}]}`),
		"a text object":         []byte(`{"lines":[{"seq":7,"stream":"stdout","text":{"a":"b"}}]}`),
		"a time not a time":     []byte(`{"lines":[{"seq":7,"stream":"stdout","time":"yesterday","text":"x"}]}`),
	} {
		err := a.replyErr(a.requestTimeout(natsbus.RunLogs(f.run.ID), data, wait))
		if cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("%s: %v, want invalid", name, err)
		}
	}
	if n := h.storedLogs(f.run.ID); n != 1 {
		t.Errorf("%d log messages stored after refusals, want 1", n)
	}

	// A run that ended takes no more logs: its agent sends its last event
	// only once all its logs are stored.
	ended := h.newRun(computation.Succeeded, "", 10, "none")
	e := h.agent(ended.run.ID)
	wantCode(t, e.replyErr(e.requestTimeout(natsbus.RunLogs(ended.run.ID), batch, wait)), cove.Conflict)
	if n := h.storedLogs(ended.run.ID); n != 0 {
		t.Errorf("%d log messages stored for a run that ended", n)
	}

	var got []int64
	if err := h.d.ReadLogs(context.Background(), f.run.ID, 0, false, func(l runproto.LogLine) error {
		got = append(got, l.Seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []int64{1, 2, 3, 4, 5}) {
		t.Errorf("lines %v", got)
	}
	// A reader leaves no consumer behind: hundreds of runs a second each
	// read once, and the server holds at most 1,000 per stream.
	s, err := h.bus.JetStream().Stream(context.Background(), natsbus.StreamRunLogs)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Consumers; n != 0 {
		t.Errorf("%d consumers left on %s after the reads", n, natsbus.StreamRunLogs)
	}
}

// TestReadLogsOutOfOrder: batches stored out of order, as when one is sent
// again, are read in order. A reader of a run that has not ended leaves
// out what follows a missing batch, which may yet come; once the run has
// ended, a missing batch is skipped.
func TestReadLogsOutOfOrder(t *testing.T) {
	h := newHarness(t)
	f := h.newRun(computation.Running, "", 10, "none")
	a := h.agent(f.run.ID)
	read := func(after int64) []int64 {
		t.Helper()
		var got []int64
		if err := h.d.ReadLogs(context.Background(), f.run.ID, after, false, func(l runproto.LogLine) error {
			got = append(got, l.Seq)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	seqs := func(first, last int64) []int64 {
		var s []int64
		for i := first; i <= last; i++ {
			s = append(s, i)
		}
		return s
	}

	a.logLines(11, 30, 10)
	if got := read(0); len(got) != 0 {
		t.Errorf("read %v before line 1 was stored", got)
	}
	follow := make(chan []int64, 1)
	go func() {
		var got []int64
		if err := h.d.ReadLogs(context.Background(), f.run.ID, 0, true, func(l runproto.LogLine) error {
			got = append(got, l.Seq)
			return nil
		}); err != nil {
			t.Errorf("ReadLogs: %v", err)
		}
		follow <- got
	}()
	time.Sleep(100 * time.Millisecond)
	a.logLines(1, 10, 10)
	if got := read(0); !slices.Equal(got, seqs(1, 30)) {
		t.Errorf("read %v", got)
	}
	if got := read(15); !slices.Equal(got, seqs(16, 30)) {
		t.Errorf("read after 15: %v", got)
	}

	// Lines 31 to 40 never come: the agent's batch was refused.
	a.logLines(41, 50, 10)
	if got := read(0); !slices.Equal(got, seqs(1, 30)) {
		t.Errorf("read %v with lines 31 to 40 missing", got)
	}
	a.event(runproto.Event{State: string(computation.Failed), Reason: string(computation.OOM), LogLines: 40})
	h.runs.waitState(t, f.run.ID, computation.Failed)
	want := append(seqs(1, 30), seqs(41, 50)...)
	select {
	case got := <-follow:
		if !slices.Equal(got, want) {
			t.Errorf("followed %v", got)
		}
	case <-time.After(wait):
		t.Fatal("the follower did not end")
	}
	if got := read(0); !slices.Equal(got, want) {
		t.Errorf("read %v after the end", got)
	}
}

// TestLogsWhileControlPlaneRestarts: log batches in flight when the
// dispatcher closes, and those sent while none runs (no responders), are
// sent again until a new one stores them. None is lost, none is stored
// twice.
func TestLogsWhileControlPlaneRestarts(t *testing.T) {
	const total = 40_000
	h := newHarness(t)
	f := h.newRun(computation.Running, "", 10, "none")
	a := h.agent(f.run.ID)
	a.logLines(1, 100, 100)

	old := h.d
	var restartedAt time.Time
	restarted := make(chan *dispatch.Dispatcher, 1)
	go func() {
		old.Close()
		time.Sleep(300 * time.Millisecond)
		d := dispatch.New(h.cfg)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := d.Start(ctx); err != nil {
			t.Errorf("Start: %v", err)
		}
		restartedAt = time.Now()
		restarted <- d
	}()
	a.logLines(101, total, 100) // cannot end before a dispatcher is back
	sent := time.Now()
	d := <-restarted
	defer d.Close()
	if sent.Before(restartedAt) {
		t.Fatal("every log batch was acknowledged while no dispatcher ran")
	}

	var n, last int64
	if err := d.ReadLogs(context.Background(), f.run.ID, 0, false, func(l runproto.LogLine) error {
		if l.Seq != last+1 {
			t.Errorf("line %d after %d", l.Seq, last)
		}
		last = l.Seq
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != total {
		t.Errorf("read %d lines, want %d", n, total)
	}
	if stored := h.storedLogs(f.run.ID); stored != total/100 {
		t.Errorf("%d batches stored, want %d", stored, total/100)
	}
}
