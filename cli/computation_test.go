package cli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/cli"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/computation/computationtest"
	"github.com/covecompute/cove/runproto"
)

// sealTar archives files and seals the archive to recipient, as an agent
// seals a run's outputs.
func sealTar(t *testing.T, files map[string]string, recipient age.Recipient) []byte {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var archive, sealed bytes.Buffer
	if err := blob.WriteTar(&archive, dir); err != nil {
		t.Fatal(err)
	}
	w, err := age.Encrypt(&sealed, recipient)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(archive.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return sealed.Bytes()
}

func writeKey(t *testing.T, k *age.X25519Identity) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key.txt")
	if err := os.WriteFile(p, []byte("# test key\n"+k.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestComputationCommands(t *testing.T) {
	e := computationtest.New(t, "sqlite")
	owner := NewUser(t)
	owner.MustLogin(e.URL, "owner@example.com")
	ws := mustJSON[struct{ ID string }](t, owner.MustRun("", "-o", "json", "workspace", "create", "A").Stdout).ID
	alg := e.AddAlgorithm(ws, catalog.KindWasm)
	ds := e.AddDataset(ws, catalog.Policy{AllowAnyAlgorithm: true})
	key := computationtest.Key(t)
	keyFile := writeKey(t, key)

	// Create, with the caller as result consumer through their key file.
	r := owner.MustRun("", "-o", "json", "computation", "create", ws, "--algorithm", alg.ID, "--dataset", "people="+ds.ID,
		"--consumer-me", "--key", keyFile, "--cpus", "0.5", "--memory", "256Mi", "--disk", "1.5Gi", "--max-duration", "10m",
		"--arg", "--verbose", "--label", "zone=eu", "--name", "stats")
	c := mustJSON[computation.Computation](t, r.Stdout)
	l := c.Manifest.Limits
	if c.Name != "stats" || l.CPUs != 0.5 || l.MemoryBytes != 256<<20 || l.DiskBytes != 3<<29 || l.MaxDurationSeconds != 600 ||
		len(c.ResultConsumers) != 1 || c.ResultConsumers[0].Recipient != key.Recipient().String() || c.Labels["zone"] != "eu" || c.Datasets[0].Name != "people" {
		t.Fatalf("created %+v", c)
	}
	r = owner.MustRun("", "computation", "get", c.ID)
	if !strings.Contains(r.Stdout, c.ManifestSHA256) || !strings.Contains(r.Stdout, "people="+ds.ID) {
		t.Fatalf("get printed %s", r.Stdout)
	}
	r = owner.MustRun("", "computation", "manifest", c.ID)
	if sum := sha256.Sum256([]byte(r.Stdout)); hex.EncodeToString(sum[:]) != c.ManifestSHA256 || !strings.Contains(r.Stderr, c.ManifestSHA256) {
		t.Fatalf("manifest printed %q / %q", r.Stdout, r.Stderr)
	}
	if list := mustJSON[list[computation.Computation]](t, owner.MustRun("", "-o", "json", "computation", "list", ws).Stdout); len(list.Items) != 1 {
		t.Fatalf("list: %+v", list)
	}
	if r := owner.MustRun("", "computation", "dryrun", c.ID); !strings.Contains(r.Stdout, "can run") {
		t.Fatalf("dry run printed %q", r.Stdout)
	}

	// Bad command lines fail before reaching the server.
	for _, args := range [][]string{
		{"computation", "create", ws, "--algorithm", alg.ID, "--dataset", "people=" + ds.ID, "--memory", "lots"},
		{"computation", "create", ws, "--algorithm", alg.ID},
		{"computation", "create", ws, "--algorithm", alg.ID, "--dataset", "nameonly"},
		{"computation", "create", ws, "--algorithm", alg.ID, "--dataset", "a=" + ds.ID, "--max-duration", "1500ms"},
		{"computation", "create", ws, "--algorithm", alg.ID, "--dataset", "a=" + ds.ID, "--consumer-me", "--key", filepath.Join(t.TempDir(), "none")},
		{"computation", "result", "run_x"},
	} {
		if r := owner.Run("", args...); r.Code != cli.ExitUsage {
			t.Fatalf("cove %v: exit %d, want %d\n%s", args, r.Code, cli.ExitUsage, r.Stderr)
		}
	}

	// A run that follows its log to the end. The fake log reader plays
	// the run: it sends the lines, then takes the run to its end with a
	// sealed result, as dispatch would.
	sealed := sealTar(t, map[string]string{"summary.txt": "rows: 42\n", "plots/a.csv": "x,y\n1,2\n"}, key.Recipient())
	sha := e.PutResult(sealed)
	lines := []runproto.LogLine{{Seq: 1, Stream: "stdout", Text: "reading people"}, {Seq: 2, Stream: "stderr", Text: "warning: 1 empty row"}, {Seq: 3, Stream: "stdout", Text: "done"}}
	e.Logs.ReadLogsFunc = func(ctx context.Context, runID string, after int64, follow bool, fn func(runproto.LogLine) error) error {
		for _, l := range lines {
			if l.Seq > after {
				if err := fn(l); err != nil {
					return err
				}
			}
		}
		if !follow {
			return nil
		}
		for _, st := range []computation.State{computation.Scheduled, computation.Provisioning, computation.Attesting, computation.Receiving, computation.Running, computation.Publishing} {
			if _, err := e.Service.Advance(ctx, runID, st, computation.RunUpdate{NodeID: "nod_1"}); err != nil {
				return err
			}
		}
		zero := 0
		_, err := e.Service.Advance(ctx, runID, computation.Succeeded, computation.RunUpdate{ExitCode: &zero, ResultSHA256: sha, ResultSize: int64(len(sealed))})
		return err
	}
	r = owner.MustRun("", "computation", "run", c.ID, "--follow")
	if r.Stdout != "reading people\ndone\n" || !strings.Contains(r.Stderr, "warning: 1 empty row") || !strings.Contains(r.Stderr, "succeeded") {
		t.Fatalf("run --follow: stdout %q stderr %q", r.Stdout, r.Stderr)
	}
	runID := strings.Fields(strings.TrimPrefix(r.Stderr, "Started run "))[0]
	runID = strings.TrimSuffix(runID, ".")

	st := mustJSON[struct {
		Run    computation.Run        `json:"run"`
		Events []computation.RunEvent `json:"events"`
	}](t, owner.MustRun("", "-o", "json", "computation", "status", runID).Stdout)
	if st.Run.State != computation.Succeeded || len(st.Events) != 8 {
		t.Fatalf("status: %+v", st)
	}
	if r := owner.MustRun("", "computation", "status", runID); !strings.Contains(r.Stdout, "succeeded") || !strings.Contains(r.Stdout, "publishing") {
		t.Fatalf("status printed %s", r.Stdout)
	}
	r = owner.MustRun("", "-o", "json", "computation", "logs", runID, "--after", "1")
	var got []runproto.LogLine
	for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		got = append(got, mustJSON[runproto.LogLine](t, line))
	}
	if len(got) != 2 || got[0] != lines[1] || got[1] != lines[2] {
		t.Fatalf("logs -o json: %q", r.Stdout)
	}

	// The result: downloaded, checked, decrypted and unpacked.
	out := filepath.Join(t.TempDir(), "out")
	r = owner.MustRun("", "computation", "result", runID, "-o", out, "--identity", keyFile)
	if !strings.Contains(r.Stdout, "Wrote 2 file(s)") {
		t.Fatalf("result printed %q", r.Stdout)
	}
	for name, want := range map[string]string{"summary.txt": "rows: 42\n", "plots/a.csv": "x,y\n1,2\n"} {
		if b, err := os.ReadFile(filepath.Join(out, name)); err != nil || string(b) != want {
			t.Fatalf("%s: %q %v", name, b, err)
		}
	}
	// Into a directory that is not empty: refused before downloading.
	if r := owner.Run("", "computation", "result", runID, "-o", out, "--identity", keyFile); r.Code != cli.ExitUsage || !strings.Contains(r.Stderr, "not empty") {
		t.Fatalf("non-empty dir: %d %s", r.Code, r.Stderr)
	}
	// With a key it was not sealed to: a clear failure, nothing written.
	parent := t.TempDir()
	wrong := writeKey(t, computationtest.Key(t))
	r = owner.Run("", "computation", "result", runID, "-o", filepath.Join(parent, "out"), "--identity", wrong)
	if r.Code != cli.ExitDenied || !strings.Contains(r.Stderr, "cannot decrypt this result") {
		t.Fatalf("wrong key: %d %s", r.Code, r.Stderr)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Fatalf("a failed result left %v", entries)
	}
	r = owner.Run("", "-o", "json", "computation", "result", runID, "-o", filepath.Join(parent, "x"), "--identity", wrong)
	if r.Code != cli.ExitDenied {
		t.Fatalf("-o json is the directory here: %d %s", r.Code, r.Stderr)
	}

	// Someone else: no access at all, or access without the result.
	other := NewUser(t)
	other.MustLogin(e.URL, "other@example.com")
	if r := other.Run("", "computation", "status", runID); r.Code != cli.ExitNotFound {
		t.Fatalf("outsider status: %d %s", r.Code, r.Stderr)
	}

	// Stop, restart and a blocked run.
	if r := owner.Run("", "computation", "stop", runID); r.Code != cli.ExitConflict {
		t.Fatalf("stopping an ended run: %d %s", r.Code, r.Stderr)
	}
	again := mustJSON[computation.Run](t, owner.MustRun("", "-o", "json", "computation", "restart", runID).Stdout)
	if r := owner.MustRun("", "computation", "stop", again.ID); !strings.Contains(r.Stdout, "stopped (stopped_by_user") {
		t.Fatalf("stop printed %q", r.Stdout)
	}
	// The owner's workspace provides the dataset, so its admins decide.
	if r := owner.MustRun("", "computation", "reject", c.ID, "--dataset", ds.ID, "--comment", "later"); !strings.Contains(r.Stdout, "rejected by") {
		t.Fatalf("reject printed %q", r.Stdout)
	}
	if r := other.Run("", "computation", "approve", c.ID); r.Code != cli.ExitNotFound {
		t.Fatalf("approve by an outsider: %d %s", r.Code, r.Stderr)
	}
	keyless := mustJSON[computation.Computation](t, owner.MustRun("", "-o", "json", "computation", "create", ws, "--algorithm", alg.ID,
		"--dataset", "people="+ds.ID, "--consumer", c.ResultConsumers[0].UserID).Stdout)
	r = owner.Run("", "computation", "dryrun", keyless.ID)
	if r.Code != cli.ExitError || !strings.Contains(r.Stdout, "consumer: result consumer") || !strings.Contains(r.Stderr, "1 blocker") {
		t.Fatalf("dry run of a blocked computation: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	r = owner.Run("", "computation", "run", keyless.ID)
	if r.Code != cli.ExitUsage || !strings.Contains(r.Stderr, "has no age key") {
		t.Fatalf("blocked run: %d %s", r.Code, r.Stderr)
	}
	if runs := mustJSON[list[computation.Run]](t, owner.MustRun("", "-o", "json", "computation", "runs", c.ID).Stdout); len(runs.Items) != 2 {
		t.Fatalf("runs: %+v", runs)
	}
}
