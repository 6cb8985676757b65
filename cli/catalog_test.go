package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/cli"
	"github.com/covecompute/cove/workspace"
)

// writeTree creates files (name to content) under a new directory.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestDatasetCommands(t *testing.T) {
	m := apptest.StartEngine(t, apptest.Engines()[0])
	ada := NewUser(t)
	ada.MustLogin(m.URL, "ada@example.com")
	bob := NewUser(t)
	bob.dir = filepath.Join(t.TempDir(), "bob")
	bob.MustLogin(m.URL, "bob@example.com")
	ws := mustJSON[workspace.Workspace](t, ada.MustRun("", "workspace", "create", "Lab", "-o", "json").Stdout)
	bobWS := mustJSON[workspace.Workspace](t, bob.MustRun("", "workspace", "create", "Bob", "-o", "json").Stdout)

	// A directory goes up as a tar archive that unpacks to the same files.
	files := map[string]string{"people.csv": "name,age\nada,36\n", "raw/2024/a.txt": "a", "raw/b.txt": strings.Repeat("b", 100000)}
	dir := writeTree(t, files)
	r := ada.MustRun("", "dataset", "upload", ws.ID, dir, "--name", "Survey", "--description", "two years", "-o", "json")
	d := mustJSON[catalog.Dataset](t, r.Stdout)
	if d.Format != catalog.FormatTar || d.Name != "Survey" || d.Visibility != catalog.Private || d.Size == 0 {
		t.Fatalf("uploaded %+v", d)
	}
	if r.Stderr != "" {
		t.Fatalf("no terminal, yet stderr has %q", r.Stderr)
	}
	rc, _, err := m.Blobs.Open(context.Background(), d.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	err = blob.ExtractTar(rc, out, d.Size)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		got, err := os.ReadFile(filepath.Join(out, filepath.FromSlash(name)))
		if err != nil || string(got) != content {
			t.Fatalf("%s unpacked as %q, %v", name, got, err)
		}
	}

	// A file, shared with Bob's workspace; the table output for people.
	file := filepath.Join(writeTree(t, map[string]string{"scores.csv": "x\n1\n"}), "scores.csv")
	r = ada.MustRun("", "dataset", "upload", ws.ID, file, "--share", bobWS.ID)
	if !regexp.MustCompile(`Uploaded dataset "scores.csv" \(ds_\w+\): file, 4 B, sha256 [0-9a-f]{64}\.`).MatchString(r.Stdout) {
		t.Fatalf("upload printed %q", r.Stdout)
	}
	shared := regexp.MustCompile(`ds_\w+`).FindString(r.Stdout)
	if got := mustJSON[catalog.Dataset](t, bob.MustRun("", "dataset", "get", shared, "-o", "json").Stdout); got.Visibility != catalog.Restricted || got.FileName != "scores.csv" {
		t.Fatalf("bob gets %+v", got)
	}
	if r := bob.Run("", "dataset", "get", d.ID); r.Code != cli.ExitNotFound {
		t.Fatalf("bob gets the private dataset: exit %d %s", r.Code, r.Stderr)
	}

	// A link out of the directory stops the upload with the archiver's
	// reason, and nothing is registered.
	leaky := writeTree(t, map[string]string{"ok.txt": "ok"})
	if err := os.Symlink("/etc/hostname", filepath.Join(leaky, "leak")); err != nil {
		t.Fatal(err)
	}
	r = ada.Run("", "dataset", "upload", ws.ID, leaky)
	if r.Code != cli.ExitUsage || !strings.Contains(r.Stderr, "symbolic link") {
		t.Fatalf("leaky upload: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if r := ada.Run("", "dataset", "upload", ws.ID, filepath.Join(dir, "missing")); r.Code != cli.ExitUsage {
		t.Fatalf("missing path: exit %d", r.Code)
	}

	list := mustJSON[list[catalog.Dataset]](t, ada.MustRun("", "dataset", "list", "--workspace", ws.ID, "-o", "json").Stdout)
	if len(list.Items) != 2 {
		t.Fatalf("list: %+v", list)
	}
	r = ada.MustRun("", "dataset", "list", "--name", "surv")
	if !regexp.MustCompile(`(?m)^ID\s+NAME\s+FORMAT\s+SIZE\s+VISIBILITY\s+WORKSPACE\s+CREATED\n` + d.ID + `\s+Survey\s+tar\s`).MatchString(r.Stdout) {
		t.Fatalf("list printed\n%s", r.Stdout)
	}

	// The policy: shown, replaced by flags, an algorithm ID standing for
	// its digest.
	wasmFile := filepath.Join(t.TempDir(), "hello.wasm")
	if err := os.WriteFile(wasmFile, []byte("\x00asm\x01\x00\x00\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	alg := mustJSON[catalog.Algorithm](t, ada.MustRun("", "algorithm", "create", ws.ID, wasmFile, "-o", "json").Stdout)
	pol := mustJSON[catalog.Dataset](t, ada.MustRun("", "dataset", "policy", d.ID, "--allow-algorithm", alg.ID, "--allow-publisher", bobWS.ID,
		"--require-tee", "sev-snp", "--approval", "--max-duration", "10m", "--price-per-run", "250", "-o", "json").Stdout).Policy
	if len(pol.AllowedAlgorithms) != 1 || pol.AllowedAlgorithms[0] != alg.SHA256 || pol.RequiredTEE != catalog.TEESEVSNP ||
		!pol.ApprovalRequired || pol.MaxDurationSeconds != 600 || pol.PricePerRun != 250 || pol.AllowedPublishers[0] != bobWS.ID {
		t.Fatalf("policy %+v", pol)
	}
	r = ada.MustRun("", "dataset", "policy", d.ID)
	if !regexp.MustCompile(`required TEE:\s+sev-snp`).MatchString(r.Stdout) || !regexp.MustCompile(`max duration:\s+10m0s`).MatchString(r.Stdout) {
		t.Fatalf("policy printed\n%s", r.Stdout)
	}
	if got := mustJSON[catalog.Policy](t, ada.MustRun("", "dataset", "policy", d.ID, "-o", "json").Stdout); got.PricePerRun != 250 {
		t.Fatalf("policy -o json: %+v", got)
	}
	if r := ada.Run("", "dataset", "policy", d.ID, "--require-tee", "sgx"); r.Code != cli.ExitUsage || !strings.Contains(r.Stderr, "required_tee") {
		t.Fatalf("bad tee: exit %d %q", r.Code, r.Stderr)
	}
	// Any flag replaces the whole policy.
	pol = mustJSON[catalog.Dataset](t, ada.MustRun("", "dataset", "policy", d.ID, "--allow-any=false", "-o", "json").Stdout).Policy
	if len(pol.AllowedAlgorithms) != 0 || pol.ApprovalRequired || pol.RequiredTEE != catalog.TEENone {
		t.Fatalf("policy not replaced: %+v", pol)
	}

	upd := mustJSON[catalog.Dataset](t, ada.MustRun("", "dataset", "update", d.ID, "--visibility", "public", "-o", "json").Stdout)
	if upd.Visibility != catalog.Public || upd.Name != "Survey" {
		t.Fatalf("update: %+v", upd)
	}
	bob.MustRun("", "dataset", "get", d.ID)

	if r := ada.Run("", "dataset", "delete", d.ID); r.Code != cli.ExitUsage || !strings.Contains(r.Stderr, "--yes") {
		t.Fatalf("delete without --yes: exit %d %q", r.Code, r.Stderr)
	}
	if r := bob.Run("", "dataset", "delete", d.ID, "--yes"); r.Code != cli.ExitDenied {
		t.Fatalf("bob deletes: exit %d %q", r.Code, r.Stderr)
	}
	r = ada.MustRun("", "dataset", "delete", d.ID, "--yes")
	if r.Stdout != "Deleted dataset "+d.ID+".\n" {
		t.Fatalf("delete printed %q", r.Stdout)
	}
	if r := ada.MustRun("", "dataset", "delete", shared, "--yes", "-o", "json"); r.Stdout != "" {
		t.Fatalf("delete -o json printed %q", r.Stdout)
	}
}

func TestAlgorithmCommands(t *testing.T) {
	m := apptest.StartEngine(t, apptest.Engines()[0])
	u := NewUser(t)
	u.MustLogin(m.URL, "ada@example.com")
	ws := mustJSON[workspace.Workspace](t, u.MustRun("", "workspace", "create", "Lab", "-o", "json").Stdout)
	dir := writeTree(t, map[string]string{
		"stats.py":  "import sys\nprint('ok')\n",
		"fake.wasm": "#!/bin/sh\necho not wasm\n",
		"tool":      "\x7fELF...",
		"tool.cwl":  "cwlVersion: v1.2\nclass: CommandLineTool\n",
	})

	r := u.MustRun("", "algorithm", "create", ws.ID, filepath.Join(dir, "stats.py"), "--arg", "--column", "--arg", "a,b", "--cwl", filepath.Join(dir, "tool.cwl"), "-o", "json")
	a := mustJSON[catalog.Algorithm](t, r.Stdout)
	if a.Kind != catalog.KindPython || a.Name != "stats.py" || len(a.Args) != 2 || a.Args[1] != "a,b" || !strings.HasPrefix(a.CWL, "cwlVersion") {
		t.Fatalf("created %+v", a)
	}
	if r := u.Run("", "algorithm", "create", ws.ID, filepath.Join(dir, "fake.wasm")); r.Code != cli.ExitUsage || !strings.Contains(r.Stderr, "not a WebAssembly module") {
		t.Fatalf("fake wasm: exit %d %q", r.Code, r.Stderr)
	}
	if r := u.Run("", "algorithm", "create", ws.ID, filepath.Join(dir, "tool")); r.Code != cli.ExitUsage || !strings.Contains(r.Stderr, "--kind") {
		t.Fatalf("no kind: exit %d %q", r.Code, r.Stderr)
	}
	r = u.MustRun("", "algorithm", "create", ws.ID, filepath.Join(dir, "tool"), "--kind", "bin", "--name", "Tool", "--visibility", "public")
	if !strings.Contains(r.Stdout, `Created algorithm "Tool"`) {
		t.Fatalf("create printed %q", r.Stdout)
	}
	r = u.MustRun("", "algorithm", "list", "--kind", "python")
	if !strings.Contains(r.Stdout, a.ID) || strings.Contains(r.Stdout, "Tool") {
		t.Fatalf("list --kind python printed\n%s", r.Stdout)
	}
	r = u.MustRun("", "algorithm", "get", a.ID)
	if !regexp.MustCompile(`args:\s+--column, a,b`).MatchString(r.Stdout) || !regexp.MustCompile(`cwl:\s+yes`).MatchString(r.Stdout) {
		t.Fatalf("get printed\n%s", r.Stdout)
	}
	a = mustJSON[catalog.Algorithm](t, u.MustRun("", "algorithm", "update", a.ID, "--cwl", "", "--description", "stats", "-o", "json").Stdout)
	if a.CWL != "" || a.Description != "stats" {
		t.Fatalf("update %+v", a)
	}
	u.MustRun("", "algorithm", "delete", a.ID, "--yes")
	if r := u.Run("", "algorithm", "get", a.ID); r.Code != cli.ExitNotFound {
		t.Fatalf("get after delete: exit %d", r.Code)
	}
}

func TestKeysGenerate(t *testing.T) {
	u := NewUser(t)
	out := filepath.Join(t.TempDir(), "me.key")
	r := u.MustRun("", "keys", "generate", "-o", out)
	recipient := strings.TrimSpace(r.Stdout)
	if !strings.HasPrefix(recipient, "age1") || !strings.Contains(r.Stderr, out) {
		t.Fatalf("stdout %q, stderr %q", r.Stdout, r.Stderr)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file: %v %v", fi, err)
	}
	// The file is a working age identity for the printed recipient.
	data, _ := os.ReadFile(out)
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil || len(ids) != 1 || ids[0].(*age.X25519Identity).Recipient().String() != recipient {
		t.Fatalf("identity file does not match: %v", err)
	}
	if r := u.Run("", "keys", "generate", "--output", out); r.Code != cli.ExitUsage || !strings.Contains(r.Stderr, "exists") {
		t.Fatalf("overwrite: exit %d %q", r.Code, r.Stderr)
	}
	after, _ := os.ReadFile(out)
	if !bytes.Equal(after, data) {
		t.Fatal("the identity was overwritten")
	}
	// -o json out of habit does not write a secret to a file named json.
	if r := u.Run("", "keys", "generate", "-o", "json"); r.Code != cli.ExitUsage {
		t.Fatalf("-o json: exit %d %q", r.Code, r.Stderr)
	}
	// Without -o it goes to the configuration directory.
	r = u.MustRun("", "keys", "generate")
	if !strings.HasPrefix(r.Stdout, "age1") || !strings.Contains(r.Stderr, filepath.Join(u.dir, "age-identity.txt")) {
		t.Fatalf("default file: stdout %q stderr %q", r.Stdout, r.Stderr)
	}
	if fi, err := os.Stat(filepath.Join(u.dir, "age-identity.txt")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("default identity file: %v %v", fi, err)
	}
}
