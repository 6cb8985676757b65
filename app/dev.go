package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/computenode"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/samples"
)

// DevAdminEmail is the account --dev seeds.
const DevAdminEmail = "admin@cove.local"

const devPasswordFile = "dev-admin-password"

// seed creates, once, the dev admin with a random password kept in the data
// dir, a demo workspace it owns, and the samples in it: the people dataset,
// whose policy allows the sample algorithms, and the algorithms. Later
// starts reuse all of it.
func (m *Main) seed(ctx context.Context) error {
	path := filepath.Join(m.Config.DataDir, devPasswordFile)
	if b, err := os.ReadFile(path); err == nil {
		m.DevPassword = strings.TrimSpace(string(b))
		return nil
	}
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return cove.Wrap(err, "could not make a password")
	}
	m.DevPassword = base64.RawURLEncoding.EncodeToString(b)
	u, err := m.Identity.Signup(ctx, cove.Principal{Admin: true}, identity.SignupInput{Email: DevAdminEmail, Name: "Dev Admin", Password: m.DevPassword})
	if err != nil {
		return err
	}
	p := cove.Principal{UserID: u.ID, Email: u.Email, Admin: u.Admin}
	ws, err := m.Workspace.Create(ctx, p, "demo")
	if err != nil {
		return err
	}
	if err := m.seedSamples(ctx, p, ws.ID); err != nil {
		return err
	}
	return writeSecret(path, m.DevPassword+"\n")
}

// seedSamples uploads the sample dataset and algorithms. The wasm samples
// are Go programs compiled with the local Go toolchain; without one they
// are skipped with a warning.
func (m *Main) seedSamples(ctx context.Context, p cove.Principal, wsID string) error {
	ds, err := m.Catalog.CreateDataset(ctx, p, wsID, catalog.DatasetUpload{
		Name: "people", Description: "200 synthetic people: name, age, height_cm, income", Format: catalog.FormatFile, FileName: "people.csv",
	}, bytes.NewReader(samples.PeopleCSV))
	if err != nil {
		return err
	}
	py, err := m.Catalog.CreateAlgorithm(ctx, p, wsID, catalog.AlgorithmUpload{
		Name: "csvstats-python", Description: "per-column statistics of every CSV input, in Python", Kind: catalog.KindPython, FileName: "stats.py",
	}, bytes.NewReader(samples.StatsPy))
	if err != nil {
		return err
	}
	allowed := []string{py.SHA256}
	for _, s := range []struct{ name, desc string }{
		{"csvstats", "per-column statistics of every CSV input"},
		{"wordcount", "words and lines of every input file"},
	} {
		_, _ = io.WriteString(m.Out, "building sample algorithm "+s.name+" (first start only)...\n")
		path, err := samples.BuildWasm(ctx, s.name, filepath.Join(m.Config.DataDir, "samples"))
		if err != nil {
			m.Log.Warn("skipping a wasm sample", "sample", s.name, "err", err)
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			return cove.Wrap(err, "could not read the built sample")
		}
		a, err := m.Catalog.CreateAlgorithm(ctx, p, wsID, catalog.AlgorithmUpload{Name: s.name, Description: s.desc, Kind: catalog.KindWasm, FileName: s.name + ".wasm"}, f)
		f.Close()
		if err != nil {
			return err
		}
		allowed = append(allowed, a.SHA256)
	}
	_, err = m.Catalog.SetDatasetPolicy(ctx, p, ds.ID, catalog.Policy{AllowedAlgorithms: allowed, RequiredTEE: catalog.TEENone})
	return err
}

// startDevNode runs one compute node inside the process, enrolled over the
// API like any other. Its identity is kept in <data_dir>/node, so restarts
// reuse it.
func (m *Main) startDevNode(ctx context.Context, apiURL string) error {
	dir := filepath.Join(m.Config.DataDir, "node")
	identity := filepath.Join(dir, "node.json")
	token := func() (string, error) {
		u, err := m.Identity.FindUserByEmail(ctx, DevAdminEmail)
		if err != nil {
			return "", err
		}
		t, err := m.Nodes.CreateEnrollToken(ctx, cove.Principal{UserID: u.ID, Email: u.Email, Admin: u.Admin}, "", time.Hour, true)
		if err != nil {
			return "", err
		}
		return t.Token, nil
	}
	cfg := computenode.Config{
		ServerURL: apiURL, Name: "embedded", DataDir: dir, Log: m.Log.With("component", "node"),
		CAFingerprint: m.CA.RootFingerprint(),
	}
	_, err := os.Stat(identity)
	enrolled := err == nil
	if !enrolled {
		if cfg.Token, err = token(); err != nil {
			return err
		}
	}
	// The data dir is private (0700), which the process driver's sandbox
	// user cannot traverse; runs go under the system's temp dir instead,
	// in a directory named after this data dir.
	abs, err := filepath.Abs(m.Config.DataDir)
	if err != nil {
		return cove.Wrap(err, "cannot resolve the data directory")
	}
	sum := sha256.Sum256([]byte(abs))
	cfg.RunsDir = filepath.Join(os.TempDir(), "cove-runs-"+hex.EncodeToString(sum[:6]))
	n, err := computenode.Start(ctx, cfg)
	if code := cove.ErrorCode(err); enrolled && (code == cove.Invalid || code == cove.Unauthenticated) {
		// An identity from an older Cove, or one this control plane no
		// longer accepts (revoked, expired): a dev node just enrolls again.
		m.Log.Warn("the embedded node's identity cannot be used; enrolling it again", "err", err)
		if err := os.Remove(identity); err != nil {
			return cove.Wrap(err, "cannot remove "+identity)
		}
		if cfg.Token, err = token(); err != nil {
			return err
		}
		n, err = computenode.Start(ctx, cfg)
	}
	if err != nil {
		return err
	}
	m.devNode = n
	return nil
}
