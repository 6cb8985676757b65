package dispatch_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/dispatch"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
)

// wait bounds every wait of the tests; generous for -race on a busy machine.
const wait = 20 * time.Second

// memRuns is an in-memory run store that follows the run state machine.
type memRuns struct {
	mu        sync.Mutex
	runs      map[string]*computation.Run
	manifests map[string]*computation.Manifest
	history   map[string][]computation.State
	changed   chan struct{} // closed and replaced at every change
}

var _ dispatch.Runs = (*memRuns)(nil)

func newMemRuns() *memRuns {
	return &memRuns{
		runs:      map[string]*computation.Run{},
		manifests: map[string]*computation.Manifest{},
		history:   map[string][]computation.State{},
		changed:   make(chan struct{}),
	}
}

func (s *memRuns) add(r *computation.Run, m *computation.Manifest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := *r
	s.runs[r.ID] = &c
	s.manifests[r.ID] = m
	s.history[r.ID] = []computation.State{r.State}
}

func (s *memRuns) FindRun(_ context.Context, id string) (*computation.Run, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.runs[id]
	if r == nil {
		return nil, cove.Errorf(cove.NotFound, "no run %s", id)
	}
	c := *r
	return &c, nil
}

func (s *memRuns) Advance(_ context.Context, id string, to computation.State, u computation.RunUpdate) (*computation.Run, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.runs[id]
	if r == nil {
		return nil, cove.Errorf(cove.NotFound, "no run %s", id)
	}
	if r.State != to {
		if err := computation.Move(r.State, to, u.Reason); err != nil {
			return nil, err
		}
		r.State = to
		s.history[id] = append(s.history[id], to)
	}
	if u.Reason != "" {
		r.Reason = u.Reason
	}
	if u.Message != "" {
		r.Message = u.Message
	}
	if u.NodeID != "" {
		r.NodeID = u.NodeID
	}
	if u.ExitCode != nil {
		r.ExitCode = u.ExitCode
	}
	if u.CPUSeconds != 0 {
		r.CPUSeconds = u.CPUSeconds
	}
	if u.PeakMemory != 0 {
		r.PeakMemory = u.PeakMemory
	}
	if u.ResultSHA256 != "" {
		r.ResultSHA256, r.ResultSize = u.ResultSHA256, u.ResultSize
	}
	close(s.changed)
	s.changed = make(chan struct{})
	c := *r
	return &c, nil
}

func (s *memRuns) Manifest(_ context.Context, runID string) ([]byte, string, *computation.Manifest, error) {
	s.mu.Lock()
	m := s.manifests[runID]
	s.mu.Unlock()
	if m == nil {
		return nil, "", nil, cove.Errorf(cove.NotFound, "no run %s", runID)
	}
	canon, sum, err := m.Canonical()
	return canon, sum, m, err
}

func (s *memRuns) FindActiveRuns(context.Context) ([]*computation.Run, error) {
	return s.filter(func(r *computation.Run) bool { return r.State.Active() }), nil
}

func (s *memRuns) FindRunsOnNode(_ context.Context, node string) ([]*computation.Run, error) {
	return s.filter(func(r *computation.Run) bool { return r.State.Active() && r.NodeID == node }), nil
}

func (s *memRuns) filter(keep func(*computation.Run) bool) []*computation.Run {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*computation.Run
	for _, r := range s.runs {
		if keep(r) {
			c := *r
			out = append(out, &c)
		}
	}
	return out
}

func (s *memRuns) states(id string) []computation.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.history[id])
}

// waitFor returns the run once cond holds, woken by every change.
func (s *memRuns) waitFor(tb testing.TB, id string, what string, cond func(*computation.Run) bool) *computation.Run {
	tb.Helper()
	timeout := time.After(wait)
	for {
		s.mu.Lock()
		c := *s.runs[id]
		ch := s.changed
		s.mu.Unlock()
		if cond(&c) {
			return &c
		}
		select {
		case <-ch:
		case <-timeout:
			tb.Fatalf("run %s: %s did not happen; it is %s (%s: %s)", id, what, c.State, c.Reason, c.Message)
		}
	}
}

func (s *memRuns) waitState(tb testing.TB, id string, want computation.State) *computation.Run {
	tb.Helper()
	return s.waitFor(tb, id, "state "+string(want), func(r *computation.Run) bool { return r.State == want })
}

// fakeNodes records heartbeats.
type fakeNodes struct {
	heartbeat func(context.Context, runproto.Heartbeat) error
	mu        sync.Mutex
	got       []runproto.Heartbeat
}

func (n *fakeNodes) Heartbeat(ctx context.Context, hb runproto.Heartbeat) error {
	n.mu.Lock()
	n.got = append(n.got, hb)
	f := n.heartbeat
	n.mu.Unlock()
	if f != nil {
		return f(ctx, hb)
	}
	return nil
}

func (n *fakeNodes) setHeartbeat(f func(context.Context, runproto.Heartbeat) error) {
	n.mu.Lock()
	n.heartbeat = f
	n.mu.Unlock()
}

func (n *fakeNodes) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.got)
}

// fakeScheduler records releases.
type fakeScheduler struct {
	released chan string
}

func (s *fakeScheduler) Release(_ context.Context, runID string) {
	select {
	case s.released <- runID:
	default:
	}
}

func (s *fakeScheduler) waitRelease(tb testing.TB, run string) {
	tb.Helper()
	timeout := time.After(wait)
	for {
		select {
		case got := <-s.released:
			if got == run {
				return
			}
		case <-timeout:
			tb.Fatalf("run %s was not released", run)
		}
	}
}

// harness is a dispatcher on a real embedded NATS and a real blob store.
type harness struct {
	tb    testing.TB
	bus   *natsbus.Bus
	blobs *blob.FS
	dir   string
	runs  *memRuns
	nodes *fakeNodes
	sched *fakeScheduler
	cfg   dispatch.Config
	d     *dispatch.Dispatcher
}

type option func(*dispatch.Config)

func withAgentLostAfter(d time.Duration) option {
	return func(c *dispatch.Config) { c.AgentLostAfter = d }
}

func newHarness(tb testing.TB, opts ...option) *harness {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	bus, err := natsbus.Open(ctx, natsbus.Config{DataDir: tb.TempDir(), Port: natsbus.RandomPort})
	if err != nil {
		tb.Fatalf("natsbus.Open: %v", err)
	}
	tb.Cleanup(func() { bus.Close() })
	if err := bus.EnsureStreams(ctx); err != nil {
		tb.Fatalf("EnsureStreams: %v", err)
	}
	dir := tb.TempDir()
	blobs, err := blob.NewFS(dir)
	if err != nil {
		tb.Fatalf("blob.NewFS: %v", err)
	}
	h := &harness{tb: tb, bus: bus, blobs: blobs, dir: dir, runs: newMemRuns(), nodes: &fakeNodes{}, sched: &fakeScheduler{released: make(chan string, 100)}}
	h.cfg = dispatch.Config{
		Bus:            bus,
		Runs:           h.runs,
		Blobs:          blobs,
		Nodes:          h.nodes,
		Scheduler:      h.sched,
		AgentLostAfter: time.Minute,
	}
	for _, o := range opts {
		o(&h.cfg)
	}
	h.start()
	return h
}

// start starts a new Dispatcher, closed when the test ends.
func (h *harness) start() {
	h.tb.Helper()
	d := dispatch.New(h.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := d.Start(ctx); err != nil {
		h.tb.Fatalf("Start: %v", err)
	}
	h.tb.Cleanup(func() { d.Close() })
	h.d = d
}

// put stores data and returns its digest.
func (h *harness) put(data []byte) string {
	h.tb.Helper()
	info, err := h.blobs.Put(context.Background(), bytes.NewReader(data), "")
	if err != nil {
		h.tb.Fatalf("Put: %v", err)
	}
	return info.SHA256
}

// fixture is a run with its manifest and stored inputs.
type fixture struct {
	run       *computation.Run
	manifest  *computation.Manifest
	algorithm []byte
	dataset   []byte
}

// newRun stores an algorithm and a dataset of datasetSize random bytes and
// adds a run in state on node.
func (h *harness) newRun(state computation.State, node string, datasetSize int, requiredTEE string) *fixture {
	h.tb.Helper()
	f := &fixture{algorithm: randomBytes(h.tb, 1000), dataset: randomBytes(h.tb, datasetSize)}
	f.manifest = &computation.Manifest{
		Version:       computation.ManifestVersion,
		ComputationID: cove.NewID("cmp"),
		Algorithm: computation.ManifestAlgorithm{
			ID: cove.NewID("alg"), Name: "count", Kind: "wasm", FileName: "count.wasm",
			SHA256: h.put(f.algorithm), Size: int64(len(f.algorithm)), Args: []string{},
		},
		Datasets: []computation.ManifestDataset{{
			ID: cove.NewID("ds"), Name: "people", Format: "file", FileName: "people.csv",
			SHA256: h.put(f.dataset), Size: int64(len(f.dataset)),
		}},
		ResultConsumers: []computation.ResultConsumer{
			{UserID: cove.NewID("usr"), Recipient: "age1alice"},
			{UserID: cove.NewID("usr"), Recipient: "age1bob"},
		},
		Limits:      computation.Limits{CPUs: 1, MemoryBytes: 1 << 30, MaxDurationSeconds: 60},
		RequiredTEE: requiredTEE,
	}
	_, sum, err := f.manifest.Canonical()
	if err != nil {
		h.tb.Fatal(err)
	}
	f.run = &computation.Run{
		ID: cove.NewID("run"), ComputationID: f.manifest.ComputationID, WorkspaceID: cove.NewID("ws"),
		State: state, NodeID: node, Driver: "wasm", ManifestSHA256: sum, CreatedAt: time.Now(),
	}
	h.runs.add(f.run, f.manifest)
	return f
}

func randomBytes(tb testing.TB, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// agent is a fake agent: a NATS client with its run's credential, over TCP.
type agent struct {
	tb  testing.TB
	run string
	nc  *nats.Conn
	key []byte // public key
	seq int64  // last event
}

func (h *harness) agent(run string) *agent {
	h.tb.Helper()
	cred, err := h.bus.IssueRunCredential(run, time.Now().Add(time.Hour))
	if err != nil {
		h.tb.Fatalf("IssueRunCredential: %v", err)
	}
	nc, err := nats.Connect(h.bus.ClientURL(), cred.Option(), nats.CustomInboxPrefix(natsbus.RunInboxPrefix(run)),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		h.tb.Fatalf("agent connect: %v", err)
	}
	h.tb.Cleanup(nc.Close)
	return &agent{tb: h.tb, run: run, nc: nc, key: randomBytes(h.tb, 32)}
}

// request sends a request and returns the reply's body and error.
func (a *agent) request(subject, op string, hdr map[string]string, body []byte) ([]byte, error) {
	m := nats.NewMsg(subject)
	if op != "" {
		m.Header.Set(runproto.HeaderOp, op)
	}
	for k, v := range hdr {
		m.Header.Set(k, v)
	}
	m.Data = body
	rep, err := a.nc.RequestMsg(m, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if code := rep.Header.Get(runproto.HeaderErrorCode); code != "" {
		return rep.Data, cove.Errorf(cove.Code(code), "%s", rep.Header.Get(runproto.HeaderErrorMessage))
	}
	return rep.Data, nil
}

func (a *agent) manifest() (runproto.ManifestReply, error) {
	var rep runproto.ManifestReply
	body, err := a.request(natsbus.RunManifest(a.run), "", nil, nil)
	if err != nil {
		return rep, err
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		a.tb.Fatalf("manifest reply: %v", err)
	}
	return rep, rep.Error.Err()
}

// evidence is evidence of kind whose report data binds the manifest, the
// agent's key and the nonce, computed as runproto documents it.
func (a *agent) evidence(rep runproto.ManifestReply, kind string) runproto.Evidence {
	sum, _ := hex.DecodeString(rep.SHA256)
	nonce, _ := hex.DecodeString(rep.Nonce)
	h := sha512.New()
	h.Write(sum)
	h.Write(a.key)
	h.Write(nonce)
	return runproto.Evidence{Kind: kind, PublicKey: hex.EncodeToString(a.key), ReportData: hex.EncodeToString(h.Sum(nil))}
}

func (a *agent) attest(ev runproto.Evidence) (runproto.InputsReply, error) {
	var rep runproto.InputsReply
	data, _ := json.Marshal(ev)
	body, err := a.request(natsbus.RunInputs(a.run), runproto.OpAttest, nil, data)
	if err != nil {
		return rep, err
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		a.tb.Fatalf("inputs reply: %v", err)
	}
	return rep, rep.Error.Err()
}

func (a *agent) chunk(sum string, off int64) ([]byte, error) {
	return a.request(natsbus.RunInputs(a.run), runproto.OpChunk,
		map[string]string{runproto.HeaderSHA256: sum, runproto.HeaderOffset: strconv.FormatInt(off, 10)}, nil)
}

// fetch reads an input chunk by chunk, window requests in flight, and
// checks its digest.
func (a *agent) fetch(in runproto.Input, window int) ([]byte, error) {
	out := make([]byte, in.Size)
	type result struct {
		off int64
		b   []byte
		err error
	}
	offs := make(chan int64)
	results := make(chan result)
	var wg sync.WaitGroup
	for range window {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := range offs {
				b, err := a.chunk(in.SHA256, off)
				results <- result{off, b, err}
			}
		}()
	}
	go func() {
		for off := int64(0); off < in.Size; off += runproto.ChunkSize {
			offs <- off
		}
		close(offs)
		wg.Wait()
		close(results)
	}()
	var first error
	for r := range results {
		switch {
		case r.err != nil:
			first = cmpErr(first, r.err)
		case int64(len(r.b)) != min(runproto.ChunkSize, in.Size-r.off):
			first = cmpErr(first, fmt.Errorf("chunk at %d has %d bytes", r.off, len(r.b)))
		default:
			copy(out[r.off:], r.b)
		}
	}
	if first != nil {
		return nil, first
	}
	if got := sha(out); got != in.SHA256 {
		return nil, fmt.Errorf("input %s arrived as %s", in.SHA256, got)
	}
	return out, nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// event publishes the agent's next event, as agents do: plain publish.
func (a *agent) event(ev runproto.Event) {
	a.tb.Helper()
	a.seq++
	ev.Seq = a.seq
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	a.publish(natsbus.RunEvents(a.run), ev)
}

func (a *agent) publish(subject string, v any) {
	a.tb.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		a.tb.Fatal(err)
	}
	if err := a.nc.Publish(subject, data); err != nil {
		a.tb.Fatalf("publish %s: %v", subject, err)
	}
	if err := a.nc.Flush(); err != nil {
		a.tb.Fatalf("flush: %v", err)
	}
}

func (a *agent) heartbeat() {
	a.tb.Helper()
	if err := a.nc.Publish(natsbus.RunHeartbeat(a.run), nil); err != nil {
		a.tb.Fatal(err)
	}
	a.nc.Flush()
}

// How the fake agent sends logs: as the real one does, but with batches of
// any size.
const (
	logWindow  = 16
	logTimeout = 5 * time.Second
)

// logLines sends lines first..last in batches of batch lines as agents do:
// each batch a request on RunLogs, at most logWindow unacknowledged counted
// from the oldest one, each sent again after a timeout, no responders or an
// unavailable answer until the control plane acknowledges it. It returns
// once every batch is stored.
func (a *agent) logLines(first, last int64, batch int) {
	a.tb.Helper()
	var batches [][]byte
	for seq := first; seq <= last; seq += int64(batch) {
		batches = append(batches, logBatch(seq, min(seq+int64(batch)-1, last)))
	}
	done := make([]chan error, len(batches))
	for i, data := range batches {
		if i >= logWindow {
			if err := <-done[i-logWindow]; err != nil {
				a.tb.Fatalf("log batch %d: %v", i-logWindow, err)
			}
		}
		done[i] = make(chan error, 1)
		go func() { done[i] <- a.sendLogs(data) }()
	}
	for i := max(len(batches)-logWindow, 0); i < len(batches); i++ {
		if err := <-done[i]; err != nil {
			a.tb.Fatalf("log batch %d: %v", i, err)
		}
	}
}

// sendLogs sends one log batch until the control plane acknowledges it,
// and returns the error it answers unless it is unavailable.
func (a *agent) sendLogs(data []byte) error {
	for try := 0; ; try++ {
		if try > 0 {
			time.Sleep(min(100*time.Millisecond<<min(try-1, 6), 5*time.Second))
		}
		err := a.replyErr(a.requestTimeout(natsbus.RunLogs(a.run), data, logTimeout))
		switch {
		case err == nil:
			return nil
		case errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders), cove.ErrorCode(err) == cove.Unavailable:
		default:
			return err
		}
	}
}

// requestTimeout sends a request with a body and returns the reply's body
// and error.
func (a *agent) requestTimeout(subject string, body []byte, timeout time.Duration) ([]byte, error) {
	rep, err := a.nc.Request(subject, body, timeout)
	if err != nil {
		return nil, err
	}
	if code := rep.Header.Get(runproto.HeaderErrorCode); code != "" {
		return rep.Data, cove.Errorf(cove.Code(code), "%s", rep.Header.Get(runproto.HeaderErrorMessage))
	}
	return rep.Data, nil
}

// logBatch is the JSON of a LogBatch of lines first..last.
func logBatch(first, last int64) []byte {
	now := time.Now()
	lines := make([]runproto.LogLine, 0, last-first+1)
	for seq := first; seq <= last; seq++ {
		lines = append(lines, runproto.LogLine{Seq: seq, Time: now, Stream: "stdout", Text: "processed record " + strconv.FormatInt(seq, 10) + " of the people dataset"})
	}
	data, err := json.Marshal(runproto.LogBatch{Lines: lines})
	if err != nil {
		panic(err)
	}
	return data
}

// upload sends a result: begin, chunks, commit with declared.
func (a *agent) upload(recipients []string, data []byte, declared string) error {
	begin, _ := json.Marshal(runproto.ResultBegin{Recipients: recipients})
	if err := a.replyErr(a.request(natsbus.RunResults(a.run), runproto.OpBegin, nil, begin)); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	for i, seq := 0, 1; i < len(data); i, seq = i+runproto.ChunkSize, seq+1 {
		part := data[i:min(i+runproto.ChunkSize, len(data))]
		if err := a.replyErr(a.request(natsbus.RunResults(a.run), runproto.OpChunk, map[string]string{runproto.HeaderSeq: strconv.Itoa(seq)}, part)); err != nil {
			return fmt.Errorf("chunk %d: %w", seq, err)
		}
	}
	commit, _ := json.Marshal(runproto.ResultCommit{SHA256: declared, Size: int64(len(data)), Files: 1})
	if err := a.replyErr(a.request(natsbus.RunResults(a.run), runproto.OpCommit, nil, commit)); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// replyErr is the error of a JSON Reply.
func (a *agent) replyErr(body []byte, err error) error {
	if err != nil {
		return err
	}
	var rep runproto.Reply
	if err := json.Unmarshal(body, &rep); err != nil {
		return err
	}
	return rep.Error.Err()
}

// node is a fake compute node with its node credential, over TCP.
type node struct {
	tb     testing.TB
	id     string
	nc     *nats.Conn
	cmds   chan runproto.Command
	mu     sync.Mutex
	answer func(runproto.Command) error
}

func (n *node) setAnswer(f func(runproto.Command) error) {
	n.mu.Lock()
	n.answer = f
	n.mu.Unlock()
}

func (h *harness) node(id string, answer func(runproto.Command) error) *node {
	h.tb.Helper()
	cred, err := h.bus.IssueNodeCredential(id, time.Now().Add(time.Hour))
	if err != nil {
		h.tb.Fatalf("IssueNodeCredential: %v", err)
	}
	nc, err := nats.Connect(h.bus.ClientURL(), cred.Option(), nats.CustomInboxPrefix(natsbus.NodeInboxPrefix(id)))
	if err != nil {
		h.tb.Fatalf("node connect: %v", err)
	}
	h.tb.Cleanup(nc.Close)
	n := &node{tb: h.tb, id: id, nc: nc, cmds: make(chan runproto.Command, 100), answer: answer}
	if _, err := nc.Subscribe(natsbus.NodeControl(id), func(m *nats.Msg) {
		var cmd runproto.Command
		var err error
		n.mu.Lock()
		answer := n.answer
		n.mu.Unlock()
		if err = json.Unmarshal(m.Data, &cmd); err == nil && answer != nil {
			err = answer(cmd)
		}
		n.cmds <- cmd
		data, _ := json.Marshal(runproto.Reply{Error: runproto.ErrorOf(err)})
		m.Respond(data)
	}); err != nil {
		h.tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		h.tb.Fatal(err)
	}
	return n
}

// next returns the next command that matches, skipping others.
func (n *node) next(match func(runproto.Command) bool) runproto.Command {
	n.tb.Helper()
	timeout := time.After(wait)
	for {
		select {
		case cmd := <-n.cmds:
			if match(cmd) {
				return cmd
			}
		case <-timeout:
			n.tb.Fatalf("node %s got no matching command", n.id)
		}
	}
}

func isStop(run string) func(runproto.Command) bool {
	return func(c runproto.Command) bool { return c.Stop != nil && c.Stop.RunID == run }
}

func (n *node) heartbeat(hb runproto.Heartbeat) error {
	data, _ := json.Marshal(hb)
	m, err := n.nc.Request(natsbus.NodeHeartbeat(n.id), data, 10*time.Second)
	if err != nil {
		return err
	}
	var rep runproto.Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return err
	}
	return rep.Error.Err()
}

func wantCode(tb testing.TB, err error, code cove.Code) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got no error, want %s", code)
	}
	if got := cove.ErrorCode(err); got != code {
		tb.Fatalf("got %v (%s), want %s", err, got, code)
	}
}
