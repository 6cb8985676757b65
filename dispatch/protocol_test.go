package dispatch_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/dispatch"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
)

// attested runs an agent of f's run through manifest and attestation.
func attested(t *testing.T, h *harness, f *fixture) (*agent, runproto.InputsReply) {
	t.Helper()
	a := h.agent(f.run.ID)
	rep, err := a.manifest()
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	inputs, err := a.attest(a.evidence(rep, "none"))
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	return a, inputs
}

// TestRun drives a whole run as an agent would: manifest, attestation,
// inputs, events, logs, result, success.
func TestRun(t *testing.T) {
	h := newHarness(t)
	n := h.node(cove.NewID("node"), nil)
	f := h.newRun(computation.Provisioning, n.id, 3<<20, "none")
	a := h.agent(f.run.ID)

	a.event(runproto.Event{State: string(computation.Attesting)})
	rep, err := a.manifest()
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if sum := sha256.Sum256(rep.Manifest); hex.EncodeToString(sum[:]) != rep.SHA256 || rep.SHA256 != f.run.ManifestSHA256 {
		t.Fatalf("manifest digest %s, pinned %s", rep.SHA256, f.run.ManifestSHA256)
	}
	var m computation.Manifest
	if err := json.Unmarshal(rep.Manifest, &m); err != nil || m.Datasets[0].SHA256 != sha(f.dataset) {
		t.Fatalf("manifest %s: %v", rep.Manifest, err)
	}
	if nonce, err := hex.DecodeString(rep.Nonce); err != nil || len(nonce) < 16 {
		t.Fatalf("nonce %q", rep.Nonce)
	}

	inputs, err := a.attest(a.evidence(rep, "none"))
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	if inputs.Algorithm.Name != "algorithm" || inputs.Algorithm.SHA256 != sha(f.algorithm) || len(inputs.Datasets) != 1 ||
		inputs.Datasets[0].Name != "people" || inputs.Datasets[0].Size != 3<<20 {
		t.Fatalf("inputs %+v", inputs)
	}
	run := h.runs.waitState(t, f.run.ID, computation.Receiving)
	if !strings.Contains(run.Message, "insecure") {
		t.Errorf("run message %q does not say the run is insecure", run.Message)
	}

	ds, err := a.fetch(inputs.Datasets[0], 1)
	if err != nil {
		t.Fatalf("fetch dataset: %v", err)
	}
	if !bytes.Equal(ds, f.dataset) {
		t.Fatal("dataset differs")
	}
	if _, err := a.fetch(inputs.Algorithm, 1); err != nil {
		t.Fatalf("fetch algorithm: %v", err)
	}
	if b, err := a.chunk(inputs.Datasets[0].SHA256, 3<<20); err != nil || len(b) != 0 {
		t.Fatalf("chunk at the end: %d bytes, %v", len(b), err)
	}

	a.event(runproto.Event{State: string(computation.Receiving)})
	a.event(runproto.Event{State: string(computation.Running)})
	a.logLines(1, 250, 100)
	a.event(runproto.Event{State: string(computation.Publishing)})

	result := randomBytes(t, 3*runproto.ChunkSize/2)
	if err := a.upload([]string{"age1bob", "age1alice"}, result, sha(result)); err != nil {
		t.Fatalf("upload: %v", err)
	}
	run, _ = h.runs.FindRun(context.Background(), f.run.ID)
	if run.ResultSHA256 != sha(result) || run.ResultSize != int64(len(result)) {
		t.Fatalf("run result %s %d", run.ResultSHA256, run.ResultSize)
	}
	rc, _, err := h.blobs.Open(context.Background(), sha(result))
	if err != nil {
		t.Fatalf("stored result: %v", err)
	}
	stored, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(stored, result) {
		t.Fatal("stored result differs")
	}

	exit := 0
	a.event(runproto.Event{State: string(computation.Succeeded), ExitCode: &exit, CPUTime: 1.5, PeakMemory: 1 << 20, LogLines: 250})
	run = h.runs.waitState(t, f.run.ID, computation.Succeeded)
	if run.CPUSeconds != 1.5 || run.PeakMemory != 1<<20 || run.ExitCode == nil || *run.ExitCode != 0 {
		t.Errorf("usage %+v", run)
	}
	want := []computation.State{computation.Provisioning, computation.Attesting, computation.Receiving, computation.Running, computation.Publishing, computation.Succeeded}
	if got := h.runs.states(f.run.ID); !slices.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
	n.next(isStop(f.run.ID))
	h.sched.waitRelease(t, f.run.ID)

	var lines []runproto.LogLine
	if err := h.d.ReadLogs(context.Background(), f.run.ID, 0, true, func(l runproto.LogLine) error {
		lines = append(lines, l)
		return nil
	}); err != nil {
		t.Fatalf("ReadLogs: %v", err)
	}
	if len(lines) != 250 || lines[249].Seq != 250 {
		t.Errorf("read %d lines", len(lines))
	}
	if _, err := a.chunk(inputs.Datasets[0].SHA256, 0); err == nil {
		t.Error("a finished run still gets inputs")
	}
}

func TestAttestationFails(t *testing.T) {
	for _, tc := range []struct {
		name     string
		required string
		evidence func(a *agent, rep runproto.ManifestReply) runproto.Evidence
	}{
		{"wrong report data", "none", func(a *agent, rep runproto.ManifestReply) runproto.Evidence {
			ev := a.evidence(rep, "none")
			ev.ReportData = strings.Repeat("ab", 64)
			return ev
		}},
		{"report data for another key", "none", func(a *agent, rep runproto.ManifestReply) runproto.Evidence {
			ev := a.evidence(rep, "none")
			ev.PublicKey = strings.Repeat("01", 32)
			return ev
		}},
		{"empty report data", "", func(a *agent, rep runproto.ManifestReply) runproto.Evidence {
			ev := a.evidence(rep, "none")
			ev.ReportData = ""
			return ev
		}},
		{"other nonce", "none", func(a *agent, rep runproto.ManifestReply) runproto.Evidence {
			rep.Nonce = strings.Repeat("00", 32)
			return a.evidence(rep, "none")
		}},
		{"sev-snp where tdx is required", "tdx", func(a *agent, rep runproto.ManifestReply) runproto.Evidence {
			ev := a.evidence(rep, "sev-snp")
			ev.Report = []byte("signed report")
			return ev
		}},
		{"none where tdx is required", "tdx", func(a *agent, rep runproto.ManifestReply) runproto.Evidence {
			return a.evidence(rep, "none")
		}},
		{"none where any TEE is required", "any", func(a *agent, rep runproto.ManifestReply) runproto.Evidence {
			return a.evidence(rep, "none")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			n := h.node(cove.NewID("node"), nil)
			f := h.newRun(computation.Provisioning, n.id, 1000, tc.required)
			a := h.agent(f.run.ID)
			rep, err := a.manifest()
			if err != nil {
				t.Fatalf("manifest: %v", err)
			}
			_, err = a.attest(tc.evidence(a, rep))
			wantCode(t, err, cove.Forbidden)
			run := h.runs.waitState(t, f.run.ID, computation.Failed)
			if run.Reason != computation.AttestationFailed {
				t.Errorf("reason %s", run.Reason)
			}
			n.next(isStop(f.run.ID))
			h.sched.waitRelease(t, f.run.ID)
			if _, err := a.chunk(sha(f.dataset), 0); err == nil {
				t.Error("inputs served after a failed attestation")
			}
		})
	}
}

func TestChunksOnlyOfInputsOfAttestedRuns(t *testing.T) {
	h := newHarness(t)
	f := h.newRun(computation.Provisioning, "", 1000, "none")
	other := h.put([]byte("someone else's data"))
	a := h.agent(f.run.ID)

	_, err := a.chunk(sha(f.dataset), 0)
	wantCode(t, err, cove.Forbidden) // not attested yet

	rep, err := a.manifest()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.attest(a.evidence(rep, "none")); err != nil {
		t.Fatal(err)
	}
	if b, err := a.chunk(sha(f.dataset), 0); err != nil || !bytes.Equal(b, f.dataset) {
		t.Fatalf("own input: %v", err)
	}
	_, err = a.chunk(other, 0)
	wantCode(t, err, cove.Forbidden)
	_, err = a.chunk("../../etc/passwd", 0)
	wantCode(t, err, cove.Forbidden)
	_, err = a.chunk(sha(f.dataset), 1001)
	wantCode(t, err, cove.Invalid)
	_, err = a.chunk(sha(f.dataset), -1)
	wantCode(t, err, cove.Invalid)
}

func TestResultMismatchKeepsNothing(t *testing.T) {
	h := newHarness(t)
	f := h.newRun(computation.Provisioning, "", 1000, "none")
	a, _ := attested(t, h, f)
	if _, err := h.runs.Advance(context.Background(), f.run.ID, computation.Running, computation.RunUpdate{}); err != nil {
		t.Fatal(err)
	}

	err := a.upload([]string{"age1alice"}, []byte("sealed"), sha([]byte("sealed")))
	wantCode(t, err, cove.Forbidden) // recipients must be all the consumers

	result := randomBytes(t, 2*runproto.ChunkSize+10)
	err = a.upload([]string{"age1alice", "age1bob"}, result, sha([]byte("something else")))
	wantCode(t, err, cove.Invalid)
	if _, _, err := h.blobs.Open(context.Background(), sha(result)); cove.ErrorCode(err) != cove.NotFound {
		t.Errorf("the mismatched result was stored: %v", err)
	}
	var stored []string
	h.blobs.Walk(context.Background(), func(i blob.Info) error { stored = append(stored, i.SHA256); return nil })
	if want := []string{sha(f.algorithm), sha(f.dataset)}; !sameElements(stored, want) {
		t.Errorf("store holds %v, want only the inputs %v", stored, want)
	}
	if tmp, _ := os.ReadDir(filepath.Join(h.dir, "tmp")); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
	if run, _ := h.runs.FindRun(context.Background(), f.run.ID); run.ResultSHA256 != "" {
		t.Errorf("run records result %s", run.ResultSHA256)
	}

	// The agent may try again, and a commit repeated after a lost answer
	// is answered again.
	if err := a.upload([]string{"age1alice", "age1bob"}, result, sha(result)); err != nil {
		t.Fatalf("upload: %v", err)
	}
	commit, _ := json.Marshal(runproto.ResultCommit{SHA256: sha(result), Size: int64(len(result))})
	if err := a.replyErr(a.request(natsbus.RunResults(f.run.ID), runproto.OpCommit, nil, commit)); err != nil {
		t.Errorf("repeated commit: %v", err)
	}
	begin, _ := json.Marshal(runproto.ResultBegin{Recipients: []string{"age1alice", "age1bob"}})
	wantCode(t, a.replyErr(a.request(natsbus.RunResults(f.run.ID), runproto.OpBegin, nil, begin)), cove.Conflict)
}

func sameElements(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestRunIsolation: an agent reaches nothing of another run, neither
// directly nor by naming the other run's inbox as its reply subject.
func TestRunIsolation(t *testing.T) {
	h := newHarness(t)
	fa := h.newRun(computation.Provisioning, "", 1000, "none")
	fb := h.newRun(computation.Provisioning, "", 1000, "none")
	a, b := h.agent(fa.run.ID), h.agent(fb.run.ID)

	if _, err := b.nc.Request(natsbus.RunManifest(fa.run.ID), nil, 500*time.Millisecond); err == nil {
		t.Fatal("run B's agent got run A's manifest")
	}

	// B asks for its own manifest with A's inbox as the reply subject.
	forged := natsbus.RunInboxPrefix(fa.run.ID) + ".forged"
	sub, err := a.nc.SubscribeSync(forged)
	if err != nil {
		t.Fatal(err)
	}
	a.nc.Flush()
	if err := b.nc.PublishRequest(natsbus.RunManifest(fb.run.ID), forged, nil); err != nil {
		t.Fatal(err)
	}
	b.nc.Flush()
	if m, err := sub.NextMsg(500 * time.Millisecond); err == nil {
		t.Fatalf("the control plane answered into another run's inbox: %s", m.Data)
	}
	// B's own requests still work.
	if _, err := b.manifest(); err != nil {
		t.Fatal(err)
	}
}

func TestAgentLost(t *testing.T) {
	const lostAfter = 300 * time.Millisecond
	h := newHarness(t, withAgentLostAfter(lostAfter))
	n := h.node(cove.NewID("node"), nil)
	f := h.newRun(computation.Running, n.id, 1000, "none")
	a := h.agent(f.run.ID)

	follow := make(chan error, 1)
	go func() {
		follow <- h.d.ReadLogs(context.Background(), f.run.ID, 0, true, func(runproto.LogLine) error { return nil })
	}()
	a.logLines(1, 10, 5)

	// Heartbeats keep it alive for several times lostAfter.
	var last time.Time
	for range 12 {
		time.Sleep(lostAfter / 6)
		a.heartbeat()
		last = time.Now()
	}
	if run, _ := h.runs.FindRun(context.Background(), f.run.ID); run.State != computation.Running {
		t.Fatalf("run is %s (%s) while its agent heartbeats", run.State, run.Message)
	}
	run := h.runs.waitState(t, f.run.ID, computation.Failed)
	took := time.Since(last)
	if run.Reason != computation.AgentLost {
		t.Fatalf("reason %s", run.Reason)
	}
	if took < lostAfter || took > lostAfter+2*time.Second {
		t.Errorf("failed %v after the last heartbeat, want about %v", took, lostAfter)
	}
	n.next(isStop(f.run.ID))
	h.sched.waitRelease(t, f.run.ID)
	select {
	case err := <-follow:
		if err != nil {
			t.Errorf("ReadLogs: %v", err)
		}
	case <-time.After(wait):
		t.Error("the log follower did not end with the run")
	}
}

// TestEventsWhileDown: events published while no dispatcher runs are
// applied when one starts again.
func TestEventsWhileDown(t *testing.T) {
	h := newHarness(t)
	f := h.newRun(computation.Provisioning, "", 1000, "none")
	a, _ := attested(t, h, f)
	a.event(runproto.Event{State: string(computation.Attesting)}) // late: ignored
	a.event(runproto.Event{State: string(computation.Receiving)})
	a.event(runproto.Event{State: string(computation.Running)})
	h.runs.waitState(t, f.run.ID, computation.Running)

	if err := h.d.Close(); err != nil {
		t.Fatal(err)
	}
	a.event(runproto.Event{State: string(computation.Failed), Reason: string(computation.OOM), Message: "out of memory"})
	time.Sleep(200 * time.Millisecond) // nothing may apply it now
	if run, _ := h.runs.FindRun(context.Background(), f.run.ID); run.State != computation.Running {
		t.Fatalf("run is %s while no dispatcher runs", run.State)
	}

	h.start()
	run := h.runs.waitState(t, f.run.ID, computation.Failed)
	if run.Reason != computation.OOM || run.Message != "out of memory" {
		t.Errorf("run %s: %s", run.Reason, run.Message)
	}
	want := []computation.State{computation.Provisioning, computation.Attesting, computation.Receiving, computation.Running, computation.Failed}
	if got := h.runs.states(f.run.ID); !slices.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
}

// TestEventsAgentsMayNotSend: refused events change nothing.
func TestEventsAgentsMayNotSend(t *testing.T) {
	h := newHarness(t)
	f := h.newRun(computation.Running, "", 1000, "none")
	unattested := h.newRun(computation.Attesting, "", 1000, "none")
	a, u := h.agent(f.run.ID), h.agent(unattested.run.ID)

	u.event(runproto.Event{State: string(computation.Receiving)})
	for _, ev := range []runproto.Event{
		{State: string(computation.Stopped), Reason: string(computation.StoppedByUser)},
		{State: string(computation.Queued)},
		{State: "bogus"},
		{State: string(computation.Succeeded)}, // no result yet
		{State: string(computation.Failed), Reason: string(computation.AgentLost)},
		{State: string(computation.Failed), Reason: string(computation.PolicyDenied)},
		{State: string(computation.Failed), Reason: "bored"},
		{State: string(computation.Failed)},
		{State: string(computation.Publishing), Reason: string(computation.OOM)},
	} {
		a.event(ev)
	}
	if err := a.nc.Publish(natsbus.RunEvents(f.run.ID), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	a.event(runproto.Event{State: string(computation.Publishing), Message: "sealing"})
	run := h.runs.waitState(t, f.run.ID, computation.Publishing)
	if run.Message != "sealing" {
		t.Errorf("message %q", run.Message)
	}
	// Events apply in stream order, so everything before has been seen.
	if got := h.runs.states(f.run.ID); !slices.Equal(got, []computation.State{computation.Running, computation.Publishing}) {
		t.Errorf("states %v", got)
	}
	if got := h.runs.states(unattested.run.ID); len(got) != 1 {
		t.Errorf("an agent reported itself into receiving: %v", got)
	}
}

func TestDispatch(t *testing.T) {
	h := newHarness(t)
	n := h.node(cove.NewID("node"), nil)
	f := h.newRun(computation.Queued, "", 1000, "none")

	if err := h.d.Dispatch(context.Background(), f.run.ID, n.id); err != nil {
		t.Fatalf("Dispatch: %v", err)
	}
	run, _ := h.runs.FindRun(context.Background(), f.run.ID)
	if run.State != computation.Provisioning || run.NodeID != n.id {
		t.Fatalf("run %s on %q", run.State, run.NodeID)
	}
	cmd := n.next(func(c runproto.Command) bool { return c.Start != nil })
	s := cmd.Start
	if s.RunID != f.run.ID || s.Driver != "wasm" || s.NATSURL != h.bus.ClientURL() || s.Limits.Duration != time.Minute || s.Limits.CPUs != 1 {
		t.Fatalf("start %+v", s)
	}
	// The agent connects with what the node was given and gets its manifest.
	userJWT, err := jwt.ParseDecoratedJWT([]byte(s.Creds))
	if err != nil {
		t.Fatalf("creds: %v", err)
	}
	claims, err := jwt.DecodeUserClaims(userJWT)
	if err != nil {
		t.Fatal(err)
	}
	if exp := time.Unix(claims.Expires, 0); exp.Before(time.Now().Add(10*time.Minute)) || exp.After(time.Now().Add(12*time.Minute)) {
		t.Errorf("credential expires at %v, want the run's 60 s plus 10 min", exp)
	}
	credsFile := filepath.Join(t.TempDir(), "agent.creds")
	os.WriteFile(credsFile, []byte(s.Creds), 0o600)
	nc, err := nats.Connect(s.NATSURL, nats.UserCredentials(credsFile), nats.CustomInboxPrefix(natsbus.RunInboxPrefix(s.RunID)))
	if err != nil {
		t.Fatalf("agent connect: %v", err)
	}
	defer nc.Close()
	a := &agent{tb: t, run: s.RunID, nc: nc}
	if _, err := a.manifest(); err != nil {
		t.Fatalf("manifest: %v", err)
	}

	// A node that refuses: its error comes back.
	n.setAnswer(func(runproto.Command) error { return cove.Errorf(cove.Unavailable, "no wasm driver") })
	g := h.newRun(computation.Queued, "", 1000, "none")
	err = h.d.Dispatch(context.Background(), g.run.ID, n.id)
	wantCode(t, err, cove.Unavailable)
	if !strings.Contains(err.Error(), "no wasm driver") {
		t.Errorf("error %v", err)
	}

	// A node that is not there.
	k := h.newRun(computation.Queued, "", 1000, "none")
	err = h.d.Dispatch(context.Background(), k.run.ID, cove.NewID("node"))
	wantCode(t, err, cove.Unavailable)
}

func TestStopRun(t *testing.T) {
	h := newHarness(t)
	n := h.node(cove.NewID("node"), nil)
	f := h.newRun(computation.Running, n.id, 1000, "none")
	a := h.agent(f.run.ID)
	control, err := a.nc.SubscribeSync(natsbus.RunControl(f.run.ID))
	if err != nil {
		t.Fatal(err)
	}
	a.nc.Flush()

	run, _ := h.runs.FindRun(context.Background(), f.run.ID)
	if err := h.d.StopRun(context.Background(), run); err != nil {
		t.Fatalf("StopRun: %v", err)
	}
	cmd := n.next(isStop(f.run.ID))
	if cmd.Stop.Reason != string(computation.StoppedByUser) {
		t.Errorf("reason %q", cmd.Stop.Reason)
	}
	m, err := control.NextMsg(wait)
	if err != nil {
		t.Fatalf("the agent got no stop: %v", err)
	}
	var c runproto.Command
	if err := json.Unmarshal(m.Data, &c); err != nil || c.Stop == nil || c.Stop.RunID != f.run.ID {
		t.Errorf("agent got %s", m.Data)
	}
	h.sched.waitRelease(t, f.run.ID)
}

func TestNodeHeartbeat(t *testing.T) {
	h := newHarness(t)
	n := h.node(cove.NewID("node"), nil)
	running := h.newRun(computation.Running, n.id, 10, "none")
	scheduled := h.newRun(computation.Scheduled, n.id, 10, "none")
	done := h.newRun(computation.Succeeded, n.id, 10, "none")
	elsewhere := h.newRun(computation.Running, cove.NewID("node"), 10, "none")

	// Only runs active on the node: nothing to reconcile.
	if err := n.heartbeat(runproto.Heartbeat{NodeID: n.id, Time: time.Now(), Running: []string{running.run.ID}}); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	if h.nodes.count() != 1 {
		t.Fatalf("%d heartbeats recorded", h.nodes.count())
	}

	stray := []string{running.run.ID, done.run.ID, elsewhere.run.ID, "run_unknown"}
	if err := n.heartbeat(runproto.Heartbeat{NodeID: n.id, Time: time.Now(), Running: stray}); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	cmd := n.next(func(c runproto.Command) bool { return c.Reconcile != nil })
	want := []string{running.run.ID, scheduled.run.ID}
	slices.Sort(want)
	if !slices.Equal(cmd.Reconcile.Active, want) {
		t.Errorf("reconcile %v, want %v", cmd.Reconcile.Active, want)
	}
	select {
	case c := <-n.cmds:
		t.Errorf("unexpected command %+v", c)
	default:
	}

	// A heartbeat that names another node is refused and not recorded.
	err := n.heartbeat(runproto.Heartbeat{NodeID: "node_other", Time: time.Now()})
	wantCode(t, err, cove.Invalid)
	if h.nodes.count() != 2 {
		t.Errorf("%d heartbeats recorded", h.nodes.count())
	}
	// The registry's refusal comes back, and nothing is reconciled.
	h.nodes.setHeartbeat(func(context.Context, runproto.Heartbeat) error {
		return cove.Errorf(cove.Forbidden, "node is not approved")
	})
	err = n.heartbeat(runproto.Heartbeat{NodeID: n.id, Time: time.Now(), Running: stray})
	wantCode(t, err, cove.Forbidden)
}

func TestReadLogs(t *testing.T) {
	h := newHarness(t)
	f := h.newRun(computation.Running, "", 10, "none")
	a := h.agent(f.run.ID)
	a.logLines(1, 30, 7)
	a.logLines(25, 30, 7) // repeated lines are delivered once

	// Every batch is acknowledged once stored, the repeated ones too.
	if n := h.storedLogs(f.run.ID); n != 6 {
		t.Fatalf("%d log messages stored, want 6", n)
	}
	var got []int64
	if err := h.d.ReadLogs(context.Background(), f.run.ID, 10, false, func(l runproto.LogLine) error {
		got = append(got, l.Seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 || got[0] != 11 || got[19] != 30 || !slices.IsSorted(got) {
		t.Errorf("lines %v", got)
	}

	for _, id := range []string{"*", ">", "run_x.logs", ""} {
		err := h.d.ReadLogs(context.Background(), id, 0, false, func(runproto.LogLine) error { return nil })
		wantCode(t, err, cove.Invalid)
	}
	err := h.d.ReadLogs(context.Background(), cove.NewID("run"), 0, false, func(runproto.LogLine) error { return nil })
	wantCode(t, err, cove.NotFound)

	// A follower of a run that does not end waits past the last line, and
	// stops with its context.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	err = h.d.ReadLogs(ctx, f.run.ID, 0, true, func(runproto.LogLine) error {
		if n++; n == 30 {
			time.AfterFunc(300*time.Millisecond, cancel)
		}
		return nil
	})
	wantCode(t, err, cove.Unavailable)
	if n != 30 {
		t.Errorf("follower read %d lines", n)
	}
}

// waitLogs waits until the run's log subject holds n messages.
func (h *harness) waitLogs(run string, n uint64) {
	h.tb.Helper()
	deadline := time.Now().Add(wait)
	for {
		if h.storedLogs(run) >= n {
			return
		}
		if time.Now().After(deadline) {
			h.tb.Fatalf("the stream did not get %d log messages", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// storedLogs returns how many log messages of run RUN_LOGS holds.
func (h *harness) storedLogs(run string) uint64 {
	h.tb.Helper()
	s, err := h.bus.JetStream().Stream(context.Background(), natsbus.StreamRunLogs)
	if err != nil {
		h.tb.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(natsbus.RunLogStore(run)))
	if err != nil {
		h.tb.Fatal(err)
	}
	return info.State.Subjects[natsbus.RunLogStore(run)]
}

// TestFollowMillionLines follows a run whose agent writes 1,000,000 lines
// while it is being followed, and ends when the run does. The agent sends
// them as fast as the control plane acknowledges them, and none is lost.
func TestFollowMillionLines(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000,000 lines")
	}
	const total = 1_000_000
	h := newHarness(t)
	f := h.newRun(computation.Running, "", 10, "none")
	a := h.agent(f.run.ID)

	start := time.Now()
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		var n, last int64
		err := h.d.ReadLogs(context.Background(), f.run.ID, 0, true, func(l runproto.LogLine) error {
			if l.Seq != last+1 {
				t.Errorf("line %d after %d", l.Seq, last)
			}
			last = l.Seq
			n++
			return nil
		})
		done <- result{n, err}
	}()
	a.logLines(1, total, 1000)
	published := time.Since(start) // every batch acknowledged, so stored
	exit := 3
	a.event(runproto.Event{State: string(computation.Failed), Reason: string(computation.AlgorithmError), ExitCode: &exit, LogLines: total})
	select {
	case r := <-done:
		took := time.Since(start)
		if r.err != nil {
			t.Fatalf("ReadLogs: %v", r.err)
		}
		if r.n != total {
			t.Fatalf("read %d lines, want %d", r.n, total)
		}
		t.Logf("followed %d lines in %v (the agent had them all stored in %v): %.0f lines/s",
			total, took.Round(time.Millisecond), published.Round(time.Millisecond), float64(total)/took.Seconds())
	case <-time.After(5 * time.Minute):
		t.Fatal("the follower did not end")
	}
	if run, _ := h.runs.FindRun(context.Background(), f.run.ID); run.State != computation.Failed {
		t.Errorf("run is %s", run.State)
	}
}

// TestReplicas runs several runs against two dispatchers sharing the bus,
// the store and the nonce key: requests of one run land on either, and an
// upload works whichever replica the queue group picks for each chunk.
func TestReplicas(t *testing.T) {
	key := randomBytes(t, 32)
	h := newHarness(t, func(c *dispatch.Config) { c.NonceKey = key })
	first := h.d
	h.start()
	second := h.d

	for i := range 4 {
		f := h.newRun(computation.Provisioning, "", runproto.ChunkSize+100, "none")
		readers := []*dispatch.Dispatcher{first, second}
		follow := make(chan int, 1)
		go func() {
			n := 0
			if err := readers[i%2].ReadLogs(context.Background(), f.run.ID, 0, true, func(runproto.LogLine) error { n++; return nil }); err != nil {
				t.Errorf("ReadLogs: %v", err)
			}
			follow <- n
		}()

		a, inputs := attested(t, h, f)
		if _, err := a.fetch(inputs.Datasets[0], 2); err != nil {
			t.Fatalf("run %d fetch: %v", i, err)
		}
		a.event(runproto.Event{State: string(computation.Running)})
		a.logLines(1, 20, 5)
		a.event(runproto.Event{State: string(computation.Publishing)})
		result := randomBytes(t, 4*runproto.ChunkSize)
		if err := a.upload([]string{"age1alice", "age1bob"}, result, sha(result)); err != nil {
			t.Fatalf("run %d upload: %v", i, err)
		}
		a.event(runproto.Event{State: string(computation.Succeeded), LogLines: 20})
		h.runs.waitState(t, f.run.ID, computation.Succeeded)
		select {
		case n := <-follow:
			if n != 20 {
				t.Errorf("run %d: follower read %d lines", i, n)
			}
		case <-time.After(wait):
			t.Fatalf("run %d: follower did not end", i)
		}
	}
}
