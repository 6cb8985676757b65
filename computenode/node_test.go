package computenode_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/agent/agenttest"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/computenode"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/samples/samplestest"
	"github.com/covecompute/cove/sandbox"
)

// enroller is a fake enrollment endpoint that issues real node
// credentials from the bus, once per token.
type enroller struct {
	*httptest.Server
	bus *natsbus.Bus

	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey

	mu       sync.Mutex
	tokens   map[string]bool
	requests []runproto.EnrollRequest
	keys     map[string]string // node ID -> credential public key
}

func newEnroller(tb testing.TB, bus *natsbus.Bus, tokens ...string) *enroller {
	tb.Helper()
	e := &enroller{bus: bus, tokens: map[string]bool{}, keys: map[string]string{}}
	var err error
	if e.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, e.caKey.Public(), e.caKey)
	if err != nil {
		tb.Fatal(err)
	}
	e.caCert, _ = x509.ParseCertificate(der)
	for _, t := range tokens {
		e.tokens[t] = true
	}
	e.Server = httptest.NewServer(http.HandlerFunc(e.serve))
	tb.Cleanup(e.Close)
	return e
}

func (e *enroller) serve(w http.ResponseWriter, r *http.Request) {
	writeError := func(status int, code cove.Code, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"code": string(code), "message": msg})
	}
	if r.Method != http.MethodPost || r.URL.Path != computenode.EnrollPath {
		writeError(http.StatusNotFound, cove.NotFound, "no such endpoint")
		return
	}
	var req runproto.EnrollRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(http.StatusBadRequest, cove.Invalid, "bad JSON")
		return
	}
	e.mu.Lock()
	ok := e.tokens[req.Token]
	delete(e.tokens, req.Token)
	e.requests = append(e.requests, req)
	e.mu.Unlock()
	if !ok {
		writeError(http.StatusUnauthorized, cove.Unauthenticated, "the enrollment token is not valid")
		return
	}
	id := cove.NewID("node")
	exp := time.Now().Add(time.Hour)
	cred, err := e.bus.IssueNodeUser(id, req.NATSUser, exp)
	if err != nil {
		writeError(http.StatusBadRequest, cove.Invalid, err.Error())
		return
	}
	b, _ := pem.Decode([]byte(req.CSR))
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		writeError(http.StatusBadRequest, cove.Invalid, "bad CSR")
		return
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: id},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: exp, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, e.caCert, csr.PublicKey, e.caKey)
	if err != nil {
		writeError(http.StatusInternalServerError, cove.Internal, err.Error())
		return
	}
	e.mu.Lock()
	e.keys[id] = cred.PublicKey
	e.mu.Unlock()
	json.NewEncoder(w).Encode(runproto.EnrollReply{NodeID: id, NATSURL: e.bus.ClientURL(), NodeCredential: runproto.NodeCredential{
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		Chain:       string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.caCert.Raw})),
		JWT:         cred.JWT, Expires: cred.Expires,
	}})
}

func (e *enroller) calls() []runproto.EnrollRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.requests)
}

// env is a bus, a fake control plane, an enrollment endpoint and a wasm
// driver shared by the test's nodes.
type env struct {
	bus  *natsbus.Bus
	cp   *agenttest.ControlPlane
	enr  *enroller
	wasm sandbox.Driver
}

func newEnv(tb testing.TB, tokens ...string) *env {
	tb.Helper()
	bus := agenttest.MustOpenBus(tb)
	return &env{
		bus:  bus,
		cp:   agenttest.New(tb, bus, agenttest.MustOpenBlobs(tb)),
		enr:  newEnroller(tb, bus, tokens...),
		wasm: agenttest.MustWasmDriver(tb),
	}
}

func (e *env) config(tb testing.TB, dir, token string) computenode.Config {
	return computenode.Config{
		ServerURL: e.enr.URL,
		Token:     token,
		Name:      "test-node",
		DataDir:   dir,
		Labels:    map[string]string{"zone": "test"},
		Capacity:  runproto.Resources{CPUs: 2, MemoryBytes: 1 << 30, DiskBytes: 4 << 30},
		Drivers:   map[string]sandbox.Driver{"wasm": e.wasm},
		Log:       testLogger(tb),
	}
}

// startNode starts a node and closes it when the test ends.
func (e *env) startNode(tb testing.TB, cfg computenode.Config) *computenode.Node {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := computenode.Start(ctx, cfg)
	if err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() { n.Close() })
	return n
}

func testLogger(tb testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// command sends cmd to the node and returns the error of its reply.
func (e *env) command(tb testing.TB, node string, cmd runproto.Command) error {
	tb.Helper()
	b, _ := json.Marshal(cmd)
	return e.commandRaw(tb, node, b)
}

func (e *env) commandRaw(tb testing.TB, node string, body []byte) error {
	tb.Helper()
	msg, err := e.bus.Conn().Request(natsbus.NodeControl(node), body, 10*time.Second)
	if err != nil {
		tb.Fatalf("command to %s: %v", node, err)
	}
	var reply runproto.Reply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		tb.Fatalf("reply %q: %v", msg.Data, err)
	}
	return reply.Error.Err()
}

// heartbeats subscribes to the node's heartbeats.
func (e *env) heartbeats(tb testing.TB, node string) *nats.Subscription {
	tb.Helper()
	sub, err := e.bus.Conn().SubscribeSync(natsbus.NodeHeartbeat(node))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sub.Unsubscribe() })
	return sub
}

// waitBeat waits for a heartbeat that satisfies cond.
func waitBeat(tb testing.TB, sub *nats.Subscription, what string, cond func(runproto.Heartbeat) bool) runproto.Heartbeat {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		var hb runproto.Heartbeat
		if err := json.Unmarshal(msg.Data, &hb); err != nil {
			tb.Fatalf("heartbeat %q: %v", msg.Data, err)
		}
		if cond(hb) {
			return hb
		}
	}
	tb.Fatalf("no heartbeat with %s", what)
	return runproto.Heartbeat{}
}

// addRun registers a run of the probe or wordcount sample with the fake
// control plane and returns it with its Start command.
func (e *env) addRun(tb testing.TB, sample string, args ...string) (*agenttest.Run, runproto.Command) {
	tb.Helper()
	module, err := os.ReadFile(samplestest.MustBuildWasm(tb, sample))
	if err != nil {
		tb.Fatal(err)
	}
	sum, size := agenttest.MustPut(tb, e.cp.Blobs, module)
	text := []byte("one two two three three three\n")
	dsum, dsize := agenttest.MustPut(tb, e.cp.Blobs, text)
	m := computation.Manifest{
		ComputationID: cove.NewID("cmp"),
		Algorithm: computation.ManifestAlgorithm{
			ID: cove.NewID("alg"), Name: sample, Kind: "wasm", FileName: sample + ".wasm", SHA256: sum, Size: size, Args: args,
		},
		Datasets: []computation.ManifestDataset{{
			ID: cove.NewID("ds"), Name: "text", Format: "file", FileName: "text.txt", SHA256: dsum, Size: dsize,
		}},
		ResultConsumers: []computation.ResultConsumer{{UserID: cove.NewID("usr"), Recipient: agenttest.MustIdentity(tb).Recipient().String()}},
		Limits:          computation.Limits{MaxDurationSeconds: 300},
	}
	r := e.cp.AddRun(tb, cove.NewID("run"), agenttest.RunSpec{Manifest: m})
	return r, runproto.Command{Start: &runproto.Start{
		RunID: r.ID, Driver: "wasm", NATSURL: e.bus.ClientURL(), Creds: string(r.Creds),
	}}
}

func TestEnrollHeartbeatRun(t *testing.T) {
	e := newEnv(t, "tok1")
	dir := t.TempDir()
	n := e.startNode(t, e.config(t, dir, "tok1"))
	if !cove.ValidID("node", n.ID()) {
		t.Fatalf("node ID %q", n.ID())
	}

	reqs := e.enr.calls()
	if len(reqs) != 1 || reqs[0].Name != "test-node" || !slices.Equal(reqs[0].Drivers, []string{"wasm"}) ||
		reqs[0].Labels["zone"] != "test" || reqs[0].Capacity.CPUs != 2 || reqs[0].TEE != "none" {
		t.Errorf("enrollment requests %+v", reqs)
	}
	fi, err := os.Stat(filepath.Join(dir, "node.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("node.json: %v, mode %v", err, fi.Mode())
	}

	beats := e.heartbeats(t, n.ID())
	hb := waitBeat(t, beats, "the node's capacity", func(hb runproto.Heartbeat) bool { return true })
	if hb.NodeID != n.ID() || hb.Capacity.MemoryBytes != 1<<30 || !slices.Equal(hb.Drivers, []string{"wasm"}) || hb.Running == nil {
		t.Errorf("heartbeat %+v", hb)
	}

	r, start := e.addRun(t, "wordcount")
	if err := e.command(t, n.ID(), start); err != nil {
		t.Fatalf("start: %v", err)
	}
	s := e.cp.WaitFinal(t, r, time.Minute)
	if final, _ := s.Final(); final.State != "succeeded" || s.Commit == nil {
		t.Fatalf("run ended %v, commit %v, problems %v", s.States(), s.Commit, s.Problems)
	}
	waitBeat(t, beats, "no run", func(hb runproto.Heartbeat) bool { return len(hb.Running) == 0 })
	if entries, _ := os.ReadDir(filepath.Join(dir, "runs")); len(entries) != 0 {
		t.Errorf("work directories left: %v", entries)
	}

	// The same inputs again come from the node's cache: nothing is fetched.
	if entries, _ := os.ReadDir(filepath.Join(dir, "cache", "sha256")); len(entries) != 2 {
		t.Errorf("the cache holds %d entries, want the algorithm and the dataset", len(entries))
	}
	r, start = e.addRun(t, "wordcount")
	if err := e.command(t, n.ID(), start); err != nil {
		t.Fatalf("start: %v", err)
	}
	s = e.cp.WaitFinal(t, r, time.Minute)
	if final, _ := s.Final(); final.State != "succeeded" || s.ChunksServed != 0 {
		t.Errorf("second run ended %v with %d chunks served, want succeeded with none", s.States(), s.ChunksServed)
	}
}

// A node with its input cache turned off fetches every input every time
// and keeps nothing.
func TestInputCacheOff(t *testing.T) {
	e := newEnv(t, "tok1")
	dir := t.TempDir()
	cfg := e.config(t, dir, "tok1")
	cfg.InputCacheBytes = -1
	n := e.startNode(t, cfg)
	for range 2 {
		r, start := e.addRun(t, "wordcount")
		if err := e.command(t, n.ID(), start); err != nil {
			t.Fatalf("start: %v", err)
		}
		s := e.cp.WaitFinal(t, r, time.Minute)
		if final, _ := s.Final(); final.State != "succeeded" || s.ChunksServed == 0 {
			t.Errorf("run ended %v with %d chunks served, want succeeded with some", s.States(), s.ChunksServed)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "cache")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a cache directory exists: %v", err)
	}
}

func TestStopReconcileClose(t *testing.T) {
	e := newEnv(t, "tok")
	n := e.startNode(t, e.config(t, t.TempDir(), "tok"))
	beats := e.heartbeats(t, n.ID())

	var runs []*agenttest.Run
	for range 3 {
		r, start := e.addRun(t, "probe", "sleep", "1h")
		if err := e.command(t, n.ID(), start); err != nil {
			t.Fatalf("start: %v", err)
		}
		if err := e.command(t, n.ID(), start); cove.ErrorCode(err) != cove.Conflict {
			t.Errorf("second start of %s: %v, want conflict", r.ID, err)
		}
		runs = append(runs, r)
	}
	for _, r := range runs {
		e.cp.WaitState(t, r, computation.Running, time.Minute)
	}
	ids := []string{runs[0].ID, runs[1].ID, runs[2].ID}
	slices.Sort(ids)
	waitBeat(t, beats, "three runs", func(hb runproto.Heartbeat) bool { return slices.Equal(hb.Running, ids) })

	// Stop the first.
	if err := e.command(t, n.ID(), runproto.Command{Stop: &runproto.Stop{RunID: runs[0].ID, Reason: "stopped_by_user"}}); err != nil {
		t.Fatalf("stop: %v", err)
	}
	waitBeat(t, beats, "the first run gone", func(hb runproto.Heartbeat) bool {
		return len(hb.Running) == 2 && !slices.Contains(hb.Running, runs[0].ID)
	})
	// Stopping it again, or a run the node never had, is fine.
	if err := e.command(t, n.ID(), runproto.Command{Stop: &runproto.Stop{RunID: runs[0].ID}}); err != nil {
		t.Errorf("second stop: %v", err)
	}

	// The control plane found the third stale. The second is in no list,
	// as a run started after the control plane looked: it lives on.
	if err := e.command(t, n.ID(), runproto.Command{Reconcile: &runproto.Reconcile{Active: []string{}, Stale: []string{runs[2].ID}}}); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	waitBeat(t, beats, "only the second run", func(hb runproto.Heartbeat) bool {
		return slices.Equal(hb.Running, []string{runs[1].ID})
	})
	seen := 0
	waitBeat(t, beats, "two more heartbeats", func(hb runproto.Heartbeat) bool {
		if !slices.Equal(hb.Running, []string{runs[1].ID}) {
			t.Errorf("running %v after the reconcile, want the second run alone", hb.Running)
			return true
		}
		seen++
		return seen == 2
	})

	// Close stops the last and returns once its agent has.
	start := time.Now()
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close took %v", time.Since(start))
	waitBeat(t, beats, "the last heartbeat listing no run", func(hb runproto.Heartbeat) bool { return len(hb.Running) == 0 })
	select {
	case <-n.Done():
	default:
		t.Error("Done is open after Close")
	}
	for _, r := range runs {
		if s := e.cp.Snapshot(r); !slices.Equal(s.States(), []string{"attesting", "receiving", "running"}) || s.Begin != nil {
			t.Errorf("run %s: states %v after a stop", r.ID, s.States())
		}
	}
}

func TestBadCommands(t *testing.T) {
	e := newEnv(t, "tok")
	n := e.startNode(t, e.config(t, t.TempDir(), "tok"))
	_, start := e.addRun(t, "probe", "exit", "0")
	tests := []struct {
		name string
		body []byte
		code cove.Code
	}{
		{"not JSON", []byte("{"), cove.Invalid},
		{"empty", []byte("{}"), cove.Invalid},
		{"two commands", mustJSON(runproto.Command{Stop: &runproto.Stop{RunID: "a"}, Reconcile: &runproto.Reconcile{}}), cove.Invalid},
		{"unknown driver", mustJSON(runproto.Command{Start: &runproto.Start{RunID: start.Start.RunID, Driver: "qemu", Creds: start.Start.Creds}}), cove.Invalid},
		{"run ID with a dot", mustJSON(runproto.Command{Start: &runproto.Start{RunID: "run.a", Driver: "wasm", Creds: start.Start.Creds}}), cove.Invalid},
		{"run ID with a slash", mustJSON(runproto.Command{Start: &runproto.Start{RunID: "../a", Driver: "wasm", Creds: start.Start.Creds}}), cove.Invalid},
		{"no credential", mustJSON(runproto.Command{Start: &runproto.Start{RunID: start.Start.RunID, Driver: "wasm"}}), cove.Invalid},
		{"garbage credential", mustJSON(runproto.Command{Start: &runproto.Start{RunID: start.Start.RunID, Driver: "wasm", Creds: "x"}}), cove.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := e.commandRaw(t, n.ID(), tt.body); cove.ErrorCode(err) != tt.code {
				t.Errorf("reply %v, want %s", err, tt.code)
			}
		})
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func TestRestartReusesEnrollment(t *testing.T) {
	e := newEnv(t, "tok")
	dir := t.TempDir()
	first := e.startNode(t, e.config(t, dir, "tok"))
	id := first.ID()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// A work directory a crashed node left behind.
	stale := filepath.Join(dir, "runs", "run_stale")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(stale, "secret.csv"), []byte("x"), 0o600)

	cfg := e.config(t, dir, "")
	cfg.ServerURL = ""
	second := e.startNode(t, cfg)
	if second.ID() != id {
		t.Errorf("restarted as %s, was %s", second.ID(), id)
	}
	if n := len(e.enr.calls()); n != 1 {
		t.Errorf("%d enrollments, want 1", n)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale work directory kept: %v", err)
	}
	// The restarted node works.
	r, start := e.addRun(t, "probe", "exit", "0")
	if err := e.command(t, second.ID(), start); err != nil {
		t.Fatalf("start: %v", err)
	}
	if s := e.cp.WaitFinal(t, r, time.Minute); s.Commit == nil {
		t.Errorf("run after restart: %v", s.States())
	}
}

func TestEnrollErrors(t *testing.T) {
	e := newEnv(t, "good")
	tests := []struct {
		name string
		edit func(cfg *computenode.Config)
		code cove.Code
	}{
		{"bad token", func(cfg *computenode.Config) { cfg.Token = "bad" }, cove.Unauthenticated},
		{"no token", func(cfg *computenode.Config) { cfg.Token = "" }, cove.Invalid},
		{"no server", func(cfg *computenode.Config) { cfg.ServerURL = "" }, cove.Invalid},
		{"server not http", func(cfg *computenode.Config) { cfg.ServerURL = "ftp://127.0.0.1" }, cove.Invalid},
		{"server down", func(cfg *computenode.Config) { cfg.ServerURL = "http://127.0.0.1:1" }, cove.Unavailable},
		{"node.json readable by others", func(cfg *computenode.Config) {
			os.WriteFile(filepath.Join(cfg.DataDir, "node.json"), []byte("{}"), 0o644)
		}, cove.Invalid},
		{"node.json damaged", func(cfg *computenode.Config) {
			os.WriteFile(filepath.Join(cfg.DataDir, "node.json"), []byte("{"), 0o600)
		}, cove.Invalid},
		{"negative capacity", func(cfg *computenode.Config) { cfg.Capacity.CPUs = -1 }, cove.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.config(t, t.TempDir(), "good")
			tt.edit(&cfg)
			n, err := computenode.Start(context.Background(), cfg)
			if err == nil {
				n.Close()
			}
			if cove.ErrorCode(err) != tt.code {
				t.Errorf("Start: %v, want %s", err, tt.code)
			}
		})
	}
}

func TestCommand(t *testing.T) {
	e := newEnv(t, "tok")
	dir := t.TempDir()
	cmd := computenode.Command()
	var stderr bytes.Buffer
	cmd.SetErr(&stderr)
	cmd.SetOut(&stderr)
	cmd.SetArgs([]string{"--server", e.enr.URL, "--token", "tok", "--data-dir", dir, "--name", "cmd-node",
		"--label", "zone=a", "--label", "tier=gold", "--cpus", "1.5", "--memory", "2GiB", "--disk", "10GB",
		"--drivers", "wasm", "--log-level", "warn"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()

	deadline := time.Now().Add(30 * time.Second)
	for len(e.enr.calls()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	reqs := e.enr.calls()
	if len(reqs) != 1 {
		t.Fatalf("no enrollment; output %s", stderr.String())
	}
	req := reqs[0]
	if req.Name != "cmd-node" || req.Capacity != (runproto.Resources{CPUs: 1.5, MemoryBytes: 2 << 30, DiskBytes: 10e9}) ||
		req.Labels["zone"] != "a" || req.Labels["tier"] != "gold" || !slices.Equal(req.Drivers, []string{"wasm"}) {
		t.Errorf("enrollment %+v", req)
	}
	var id struct {
		NodeID string `json:"node_id"`
	}
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(filepath.Join(dir, "node.json"))
		if err == nil && json.Unmarshal(b, &id) == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitBeat(t, e.heartbeats(t, id.NodeID), "a heartbeat", func(runproto.Heartbeat) bool { return true })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("command: %v; output %s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the command did not stop")
	}

	for _, args := range [][]string{
		{"--label", "novalue", "--data-dir", t.TempDir()},
		{"--memory", "lots", "--data-dir", t.TempDir()},
		{"--input-cache", "much", "--data-dir", t.TempDir()},
		{"--input-cache", "-1", "--data-dir", t.TempDir()},
		{"--drivers", "qemu", "--data-dir", t.TempDir()},
		{"--log-level", "loud"},
	} {
		bad := computenode.Command()
		bad.SetErr(&bytes.Buffer{})
		bad.SetOut(&bytes.Buffer{})
		bad.SetArgs(args)
		if err := bad.ExecuteContext(context.Background()); cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("%v: %v, want invalid", args, err)
		}
	}
}

func TestOneNodePerDataDir(t *testing.T) {
	e := newEnv(t, "tok")
	dir := t.TempDir()
	first := e.startNode(t, e.config(t, dir, "tok"))
	if _, err := computenode.Start(context.Background(), e.config(t, dir, "")); cove.ErrorCode(err) != cove.Conflict {
		t.Errorf("second node on the same data directory: %v, want conflict", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := e.startNode(t, e.config(t, dir, ""))
	if second.ID() != first.ID() {
		t.Errorf("IDs %s and %s", first.ID(), second.ID())
	}
}

func TestRevokedNodeStops(t *testing.T) {
	e := newEnv(t, "tok")
	n := e.startNode(t, e.config(t, t.TempDir(), "tok"))
	e.enr.mu.Lock()
	key := e.enr.keys[n.ID()]
	e.enr.mu.Unlock()
	if err := e.bus.RevokeUser(key); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("a node whose credential was revoked keeps running")
	}
	if err := n.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
