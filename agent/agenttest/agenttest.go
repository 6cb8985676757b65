// Package agenttest is a fake control plane for tests of the agent and of
// compute nodes. It answers the run side of the protocol in package
// runproto over a real embedded NATS server, serves inputs from a real
// blob store, checks what agents send the way the control plane must
// (reply subjects in the run's inbox, report data bound to the manifest,
// log lines numbered one after the other, result chunks in order and
// hashing to the commit), and records it all. Hooks on each run let a test
// tamper with what is served and refuse or ignore log batches.
package agenttest

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/nats-io/nats.go"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/agent"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/driver/wasm"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sandbox"
)

// MustOpenBus opens an embedded bus on a random loopback port in a
// temporary directory and closes it when the test ends.
func MustOpenBus(tb testing.TB) *natsbus.Bus {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := natsbus.Open(ctx, natsbus.Config{
		DataDir:        tb.TempDir(),
		Host:           "127.0.0.1",
		Port:           natsbus.RandomPort,
		StreamMaxBytes: 64 << 20,
	})
	if err != nil {
		tb.Fatalf("natsbus.Open: %v", err)
	}
	tb.Cleanup(func() { bus.Close() })
	return bus
}

// MustOpenBlobs opens a blob store in a temporary directory.
func MustOpenBlobs(tb testing.TB) *blob.FS {
	tb.Helper()
	fs, err := blob.NewFS(tb.TempDir())
	if err != nil {
		tb.Fatalf("blob.NewFS: %v", err)
	}
	return fs
}

// MustPut stores data and returns its digest and size.
func MustPut(tb testing.TB, blobs *blob.FS, data []byte) (string, int64) {
	tb.Helper()
	info, err := blobs.Put(context.Background(), bytes.NewReader(data), "")
	if err != nil {
		tb.Fatalf("Put: %v", err)
	}
	return info.SHA256, info.Size
}

// MustTar returns the tar archive, as datasets are stored, of files (slash
// paths to contents).
func MustTar(tb testing.TB, files map[string]string) []byte {
	tb.Helper()
	dir := tb.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := blob.WriteTar(&buf, dir); err != nil {
		tb.Fatalf("WriteTar: %v", err)
	}
	return buf.Bytes()
}

// MustIdentity returns a new age identity for a result consumer.
func MustIdentity(tb testing.TB) *age.X25519Identity {
	tb.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// Open decrypts a sealed result with id and returns the files of its
// archive by slash path.
func Open(tb testing.TB, sealed []byte, id age.Identity) map[string][]byte {
	tb.Helper()
	r, err := age.Decrypt(bytes.NewReader(sealed), id)
	if err != nil {
		tb.Fatalf("age.Decrypt: %v", err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			tb.Fatalf("result archive: %v", err)
		}
		if hdr.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				tb.Fatal(err)
			}
			files[hdr.Name] = b
		}
	}
}

// ControlPlane is the fake control plane. Create it with New.
type ControlPlane struct {
	Bus   *natsbus.Bus
	Blobs *blob.FS

	mu       sync.Mutex
	runs     map[string]*Run
	handlers map[string]nats.MsgHandler // of the request subjects
	subs     map[string]*nats.Subscription
}

// New subscribes a fake control plane to every run subject of bus and
// unsubscribes it when the test ends.
func New(tb testing.TB, bus *natsbus.Bus, blobs *blob.FS) *ControlPlane {
	tb.Helper()
	cp := &ControlPlane{Bus: bus, Blobs: blobs, runs: map[string]*Run{}, subs: map[string]*nats.Subscription{}}
	cp.handlers = map[string]nats.MsgHandler{
		natsbus.AllRunManifests: cp.request(cp.manifest),
		natsbus.AllRunInputs:    cp.request(cp.inputs),
		natsbus.AllRunResults:   cp.request(cp.results),
		natsbus.AllRunLogs:      cp.request(cp.logs),
	}
	all := map[string]nats.MsgHandler{
		natsbus.AllRunEvents:     cp.report(cp.event),
		natsbus.AllRunHeartbeats: cp.report(func(r *Run, _ *nats.Msg) { r.heartbeats++ }),
	}
	maps.Copy(all, cp.handlers)
	cp.mu.Lock()
	defer cp.mu.Unlock()
	for subject, h := range all {
		if err := cp.subscribe(subject, h); err != nil {
			tb.Fatalf("Subscribe %s: %v", subject, err)
		}
	}
	tb.Cleanup(func() {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		for _, sub := range cp.subs {
			sub.Unsubscribe()
		}
		cp.subs = nil // Away's return finds nothing to do
	})
	return cp
}

// subscribe subscribes h to subject. cp.mu is held.
func (cp *ControlPlane) subscribe(subject string, h nats.MsgHandler) error {
	sub, err := cp.Bus.Conn().Subscribe(subject, h)
	if err != nil {
		return err
	}
	sub.SetPendingLimits(-1, -1)
	cp.subs[subject] = sub
	return cp.Bus.Conn().Flush()
}

// Away makes the control plane stop answering requests for d, as while it
// restarts: agents' requests, log batches included, meet no responders.
// Reports (events, heartbeats) still arrive, as JetStream would keep them.
func (cp *ControlPlane) Away(d time.Duration) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	for subject := range cp.handlers {
		if sub := cp.subs[subject]; sub != nil {
			sub.Unsubscribe()
			delete(cp.subs, subject)
		}
	}
	cp.Bus.Conn().Flush()
	time.AfterFunc(d, func() {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		if cp.subs == nil {
			return // the test is over
		}
		for subject, h := range cp.handlers {
			cp.subscribe(subject, h)
		}
	})
}

// RunSpec is what a test decides about one run.
type RunSpec struct {
	// Manifest is the run's manifest; Version is set when zero.
	Manifest computation.Manifest
	// Manifested, when set, may change the manifest reply.
	Manifested func(*runproto.ManifestReply)
	// Attest, when set, decides on evidence that passed the checks.
	Attest func(runproto.Evidence) error
	// Chunk, when set, may replace the bytes served for a chunk request.
	Chunk func(sha string, offset int64, data []byte) []byte
	// Logs, when set, decides on each log batch request before it is
	// stored; try counts the requests for the batch's first line, from 1.
	// An error is answered and nothing stored (an agent sends the batch
	// again when the code is unavailable); ErrNoAnswer leaves the request
	// unanswered, as a control plane with too much to do would.
	Logs func(b runproto.LogBatch, try int) error
}

// ErrNoAnswer, returned by RunSpec.Logs, leaves a log request unanswered.
var ErrNoAnswer = errors.New("agenttest: no answer")

// Run is one run the fake control plane knows, and what its agent sent.
type Run struct {
	ID string
	// Creds is the agent's credential, in creds-file form.
	Creds []byte
	// Canonical, SHA256 and Nonce are what the manifest request returns.
	Canonical []byte
	SHA256    string
	Nonce     []byte
	spec      RunSpec

	// Guarded by the ControlPlane's mu.
	attested     bool
	evidence     *runproto.Evidence
	chunksServed int
	events       []runproto.Event
	lines        []runproto.LogLine // stored, in order of Seq
	batches      int                // stored
	logTries     map[int64]int      // log requests by first line
	heartbeats   int
	begin        *runproto.ResultBegin
	result       bytes.Buffer
	chunks       int
	commit       *runproto.ResultCommit
	problems     []string // protocol violations seen
}

// AddRun registers a run and issues its agent credential.
func (cp *ControlPlane) AddRun(tb testing.TB, id string, spec RunSpec) *Run {
	tb.Helper()
	if spec.Manifest.Version == 0 {
		spec.Manifest.Version = computation.ManifestVersion
	}
	canon, sum, err := spec.Manifest.Canonical()
	if err != nil {
		tb.Fatal(err)
	}
	cred, err := cp.Bus.IssueRunCredential(id, time.Now().Add(time.Hour))
	if err != nil {
		tb.Fatalf("IssueRunCredential: %v", err)
	}
	creds, err := cred.Creds()
	if err != nil {
		tb.Fatal(err)
	}
	nonce := make([]byte, 32)
	rand.Read(nonce)
	r := &Run{ID: id, Creds: creds, Canonical: canon, SHA256: sum, Nonce: nonce, spec: spec, logTries: map[int64]int{}}
	cp.mu.Lock()
	cp.runs[id] = r
	cp.mu.Unlock()
	return r
}

// AgentConfig returns the agent configuration of run r with drivers and a
// fresh work directory under dir (a temporary directory when empty).
func (cp *ControlPlane) AgentConfig(tb testing.TB, r *Run, dir string, drivers ...sandbox.Driver) agent.Config {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	ds := map[string]sandbox.Driver{}
	for _, d := range drivers {
		ds[d.Name()] = d
	}
	return agent.Config{
		NATSURL: cp.Bus.ClientURL(),
		Creds:   r.Creds,
		RunID:   r.ID,
		Drivers: ds,
		WorkDir: filepath.Join(dir, "work-"+r.ID),
	}
}

// Stop asks the agent of r to stop, as the control plane does on RunControl.
func (cp *ControlPlane) Stop(tb testing.TB, r *Run) {
	tb.Helper()
	b, _ := json.Marshal(runproto.Command{Stop: &runproto.Stop{RunID: r.ID, Reason: "stopped_by_user"}})
	msg, err := cp.Bus.Conn().Request(natsbus.RunControl(r.ID), b, 10*time.Second)
	if err != nil {
		tb.Fatalf("stop %s: %v", r.ID, err)
	}
	var reply runproto.Reply
	if err := json.Unmarshal(msg.Data, &reply); err != nil || reply.Error != nil {
		tb.Fatalf("stop %s: reply %s", r.ID, msg.Data)
	}
}

// Snapshot is a copy of what the agent of a run sent.
type Snapshot struct {
	Attested     bool
	Evidence     *runproto.Evidence
	ChunksServed int
	Events       []runproto.Event
	Lines        []runproto.LogLine // stored, in order of Seq, each once
	Batches      int                // stored
	LogRequests  int                // log batch requests, repeated ones included
	Heartbeats   int
	Begin        *runproto.ResultBegin
	Result       []byte // the sealed result's chunks, in order
	ResultChunks int
	Commit       *runproto.ResultCommit
	Problems     []string
}

// Final returns the last event when it is succeeded or failed.
func (s Snapshot) Final() (runproto.Event, bool) {
	if len(s.Events) == 0 {
		return runproto.Event{}, false
	}
	ev := s.Events[len(s.Events)-1]
	return ev, computation.State(ev.State).Terminal()
}

// States returns the states of the events in order.
func (s Snapshot) States() []string {
	var states []string
	for _, ev := range s.Events {
		states = append(states, ev.State)
	}
	return states
}

// Snapshot returns what the agent of r sent so far.
func (cp *ControlPlane) Snapshot(r *Run) Snapshot {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return Snapshot{
		Attested:     r.attested,
		Evidence:     r.evidence,
		ChunksServed: r.chunksServed,
		Events:       append([]runproto.Event(nil), r.events...),
		Lines:        append([]runproto.LogLine(nil), r.lines...),
		Batches:      r.batches,
		LogRequests:  logRequests(r.logTries),
		Heartbeats:   r.heartbeats,
		Begin:        r.begin,
		Result:       bytes.Clone(r.result.Bytes()),
		ResultChunks: r.chunks,
		Commit:       r.commit,
		Problems:     append([]string(nil), r.problems...),
	}
}

// WaitFor polls r's snapshot until cond holds, and fails the test after
// timeout.
func (cp *ControlPlane) WaitFor(tb testing.TB, r *Run, timeout time.Duration, what string, cond func(Snapshot) bool) Snapshot {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := cp.Snapshot(r)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			tb.Fatalf("run %s: timed out waiting for %s; events %v, %d log lines", r.ID, what, s.States(), len(s.Lines))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitState waits until the agent of r has reported state.
func (cp *ControlPlane) WaitState(tb testing.TB, r *Run, state computation.State, timeout time.Duration) Snapshot {
	tb.Helper()
	return cp.WaitFor(tb, r, timeout, "state "+string(state), func(s Snapshot) bool {
		for _, ev := range s.Events {
			if ev.State == string(state) {
				return true
			}
		}
		return false
	})
}

// request wraps a request handler: it finds the run, drops requests whose
// reply subject is not in the run's inbox (as the real control plane
// must), and answers in a goroutine so replies may come out of order, as
// they do from the real one.
func (cp *ControlPlane) request(h func(*Run, *nats.Msg) ([]byte, error)) nats.MsgHandler {
	return func(m *nats.Msg) {
		id, ok := natsbus.RunFromSubject(m.Subject)
		if !ok || !natsbus.InRunInbox(id, m.Reply) {
			return
		}
		cp.mu.Lock()
		r := cp.runs[id]
		cp.mu.Unlock()
		go func() {
			var body []byte
			var err error = cove.Errorf(cove.NotFound, "no run %s", id)
			if r != nil {
				body, err = h(r, m)
			}
			if errors.Is(err, ErrNoAnswer) {
				return
			}
			out := nats.NewMsg(m.Reply)
			out.Data = body
			if err != nil {
				out.Header.Set(runproto.HeaderErrorCode, string(cove.ErrorCode(err)))
				out.Header.Set(runproto.HeaderErrorMessage, cove.ErrorMessage(err))
			}
			_ = cp.Bus.Conn().PublishMsg(out)
		}()
	}
}

// report wraps a handler of what agents publish.
func (cp *ControlPlane) report(h func(*Run, *nats.Msg)) nats.MsgHandler {
	return func(m *nats.Msg) {
		id, ok := natsbus.RunFromSubject(m.Subject)
		if !ok {
			return
		}
		cp.mu.Lock()
		defer cp.mu.Unlock()
		if r := cp.runs[id]; r != nil {
			h(r, m)
		}
	}
}

func (cp *ControlPlane) problem(r *Run, msg string) {
	cp.mu.Lock()
	r.problems = append(r.problems, msg)
	cp.mu.Unlock()
}

func (cp *ControlPlane) manifest(r *Run, _ *nats.Msg) ([]byte, error) {
	reply := runproto.ManifestReply{Manifest: r.Canonical, SHA256: r.SHA256, Nonce: hex.EncodeToString(r.Nonce)}
	if r.spec.Manifested != nil {
		r.spec.Manifested(&reply)
	}
	return json.Marshal(reply)
}

func (cp *ControlPlane) inputs(r *Run, m *nats.Msg) ([]byte, error) {
	switch op := m.Header.Get(runproto.HeaderOp); op {
	case runproto.OpAttest:
		var ev runproto.Evidence
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			return nil, cove.Errorf(cove.Invalid, "bad evidence")
		}
		if err := cp.verify(r, ev); err != nil {
			return json.Marshal(runproto.InputsReply{Error: runproto.ErrorOf(err)})
		}
		man := r.spec.Manifest
		reply := runproto.InputsReply{Algorithm: runproto.Input{
			Name: "algorithm", Format: "file", FileName: man.Algorithm.FileName,
			SHA256: man.Algorithm.SHA256, Size: man.Algorithm.Size,
		}}
		for _, d := range man.Datasets {
			reply.Datasets = append(reply.Datasets, runproto.Input{
				Name: d.Name, Format: d.Format, FileName: d.FileName, SHA256: d.SHA256, Size: d.Size,
			})
		}
		return json.Marshal(reply)
	case runproto.OpChunk:
		return cp.chunk(r, m)
	default:
		return nil, cove.Errorf(cove.Invalid, "unknown operation %q", op)
	}
}

// verify checks evidence as the control plane does for kind "none": the
// report data must bind the manifest digest, the agent's key and the nonce.
func (cp *ControlPlane) verify(r *Run, ev runproto.Evidence) error {
	refuse := func(why string) error {
		cp.problem(r, "attestation: "+why)
		return cove.Errorf(cove.Forbidden, "attestation refused: %s", why)
	}
	pub, err := hex.DecodeString(ev.PublicKey)
	if ev.Kind != "none" || err != nil || len(pub) != 32 {
		return refuse("evidence kind or public key")
	}
	sum, _ := hex.DecodeString(r.SHA256)
	h := sha512.New()
	h.Write(sum)
	h.Write(pub)
	h.Write(r.Nonce)
	if ev.ReportData == "" || ev.ReportData != hex.EncodeToString(h.Sum(nil)) {
		return refuse("report data is not bound to the manifest, key and nonce")
	}
	if r.spec.Attest != nil {
		if err := r.spec.Attest(ev); err != nil {
			return err
		}
	}
	cp.mu.Lock()
	r.attested, r.evidence = true, &ev
	cp.mu.Unlock()
	return nil
}

func (cp *ControlPlane) chunk(r *Run, m *nats.Msg) ([]byte, error) {
	cp.mu.Lock()
	attested := r.attested
	cp.mu.Unlock()
	if !attested {
		cp.problem(r, "chunk requested before attestation")
		return nil, cove.Errorf(cove.Forbidden, "not attested")
	}
	sum := m.Header.Get(runproto.HeaderSHA256)
	man := r.spec.Manifest
	known := sum == man.Algorithm.SHA256
	for _, d := range man.Datasets {
		known = known || sum == d.SHA256
	}
	off, err := strconv.ParseInt(m.Header.Get(runproto.HeaderOffset), 10, 64)
	if !known || err != nil || off < 0 || off%runproto.ChunkSize != 0 {
		cp.problem(r, "bad chunk request")
		return nil, cove.Errorf(cove.Invalid, "bad chunk request")
	}
	rc, _, err := cp.Blobs.Open(context.Background(), sum)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if s, ok := rc.(io.Seeker); ok {
		_, err = s.Seek(off, io.SeekStart)
	} else {
		_, err = io.CopyN(io.Discard, rc, off)
	}
	if err != nil {
		return nil, cove.Wrap(err, "cannot read the blob")
	}
	buf := make([]byte, runproto.ChunkSize)
	n, err := io.ReadFull(rc, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, cove.Wrap(err, "cannot read the blob")
	}
	data := buf[:n]
	if r.spec.Chunk != nil {
		data = r.spec.Chunk(sum, off, data)
	}
	cp.mu.Lock()
	r.chunksServed++
	cp.mu.Unlock()
	return data, nil
}

func (cp *ControlPlane) results(r *Run, m *nats.Msg) ([]byte, error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	fail := func(why string) ([]byte, error) {
		r.problems = append(r.problems, "results: "+why)
		return nil, cove.Errorf(cove.Conflict, "%s", why)
	}
	switch op := m.Header.Get(runproto.HeaderOp); op {
	case runproto.OpBegin:
		var b runproto.ResultBegin
		if err := json.Unmarshal(m.Data, &b); err != nil {
			return fail("bad begin")
		}
		want := map[string]bool{}
		for _, c := range r.spec.Manifest.ResultConsumers {
			want[c.Recipient] = true
		}
		if len(b.Recipients) != len(want) {
			return fail("recipients differ from the result consumers")
		}
		for _, rc := range b.Recipients {
			if !want[rc] {
				return fail("recipients differ from the result consumers")
			}
		}
		r.begin = &b
		r.result.Reset()
		r.chunks = 0
	case runproto.OpChunk:
		seq, err := strconv.Atoi(m.Header.Get(runproto.HeaderSeq))
		switch {
		case r.begin == nil || r.commit != nil:
			return fail("chunk outside an upload")
		case err != nil || seq != r.chunks+1:
			return fail("chunk out of order")
		}
		r.result.Write(m.Data)
		r.chunks++
	case runproto.OpCommit:
		var c runproto.ResultCommit
		if err := json.Unmarshal(m.Data, &c); err != nil || r.begin == nil {
			return fail("bad commit")
		}
		sum := sha256.Sum256(r.result.Bytes())
		if c.SHA256 != hex.EncodeToString(sum[:]) || c.Size != int64(r.result.Len()) {
			return fail("commit does not match the chunks")
		}
		r.commit = &c
	default:
		return fail("unknown operation " + op)
	}
	return json.Marshal(runproto.Reply{})
}

func (cp *ControlPlane) event(r *Run, m *nats.Msg) {
	var ev runproto.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		r.problems = append(r.problems, "bad event")
		return
	}
	if ev.Seq != int64(len(r.events))+1 {
		r.problems = append(r.problems, "event out of sequence")
	}
	r.events = append(r.events, ev)
}

// logs stores a log batch, as the control plane does: the lines must be
// numbered one after the other, and a batch sent again (same first line)
// is stored once and answered again. Batches may come out of order; the
// lines are kept in order of Seq.
func (cp *ControlPlane) logs(r *Run, m *nats.Msg) ([]byte, error) {
	var b runproto.LogBatch
	err := json.Unmarshal(m.Data, &b)
	for i, l := range b.Lines {
		if err == nil && (l.Seq != b.Lines[0].Seq+int64(i) || l.Seq < 1) {
			err = errors.New("lines not numbered one after the other")
		}
	}
	if err != nil || len(b.Lines) == 0 {
		cp.problem(r, "bad log batch")
		return nil, cove.Errorf(cove.Invalid, "bad log batch")
	}
	first, last := b.Lines[0].Seq, b.Lines[len(b.Lines)-1].Seq
	cp.mu.Lock()
	r.logTries[first]++
	try := r.logTries[first]
	cp.mu.Unlock()
	if r.spec.Logs != nil {
		if err := r.spec.Logs(b, try); err != nil {
			return nil, err
		}
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	i, found := slices.BinarySearchFunc(r.lines, first, func(l runproto.LogLine, seq int64) int { return cmp.Compare(l.Seq, seq) })
	switch {
	case found && i+len(b.Lines) <= len(r.lines) && r.lines[i+len(b.Lines)-1].Seq == last:
		// Sent again: stored already.
	case found || i < len(r.lines) && r.lines[i].Seq <= last:
		r.problems = append(r.problems, "log batches overlap")
		return nil, cove.Errorf(cove.Invalid, "log batches overlap")
	default:
		r.lines = slices.Insert(r.lines, i, b.Lines...)
		r.batches++
	}
	return json.Marshal(runproto.Reply{})
}

func logRequests(tries map[int64]int) int {
	n := 0
	for _, t := range tries {
		n += t
	}
	return n
}

// wasmCacheDir is the compilation cache every test driver shares, across
// tests and `go test` runs: compiling a Go module takes seconds.
var wasmCacheDir = filepath.Join(os.TempDir(), "cove-wasm-test-cache")

// MustWasmDriver returns a wasm driver with the shared compilation cache,
// closed when the test ends.
func MustWasmDriver(tb testing.TB) *wasm.Driver {
	tb.Helper()
	d, err := wasm.New(wasm.Config{CacheDir: wasmCacheDir})
	if err != nil {
		tb.Fatalf("wasm.New: %v", err)
	}
	tb.Cleanup(func() { d.Close(context.Background()) })
	return d
}

// Driver is a sandbox driver whose Run is a function, for tests that need
// an algorithm's behaviour without its code. DriverName is "wasm" or
// "process".
type Driver struct {
	DriverName string
	RunFunc    func(ctx context.Context, spec sandbox.Spec) (sandbox.Result, error)
}

var _ sandbox.Driver = (*Driver)(nil)

// Name returns d.DriverName.
func (d *Driver) Name() string { return d.DriverName }

// Kinds returns the kinds of the driver d stands in for.
func (d *Driver) Kinds() []string {
	if d.DriverName == "wasm" {
		return []string{"wasm"}
	}
	return []string{"bin", "python"}
}

// Available returns nil.
func (d *Driver) Available() error { return nil }

// Run calls d.RunFunc.
func (d *Driver) Run(ctx context.Context, spec sandbox.Spec) (sandbox.Result, error) {
	return d.RunFunc(ctx, spec)
}

// WaitFinal waits until the last event of r (succeeded or failed) and
// every log line it counts have arrived: the agent has every batch
// acknowledged before it sends its last event, but the event reaches the
// control plane a little after the agent returns.
func (cp *ControlPlane) WaitFinal(tb testing.TB, r *Run, timeout time.Duration) Snapshot {
	tb.Helper()
	return cp.WaitFor(tb, r, timeout, "the last event and its log lines", func(s Snapshot) bool {
		final, ok := s.Final()
		return ok && int64(len(s.Lines)) >= final.LogLines
	})
}
