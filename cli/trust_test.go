package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/cli"
	"github.com/covecompute/cove/config"
)

// TestLoginTrust logs in to a control plane that serves HTTPS with a
// certificate from its own CA: refused without trust or with a wrong
// fingerprint, accepted with the right fingerprint or the CA file, and the
// trust is saved with the login for later commands.
func TestLoginTrust(t *testing.T) {
	for _, v := range []string{cli.EnvCAFile, cli.EnvCAFingerprint} {
		t.Setenv(v, "")
	}
	cfg := apptest.Config(t.TempDir(), "")
	cfg.HTTP.TLS.Mode = config.TLSAuto
	m := apptest.Start(t, cfg)
	if !strings.HasPrefix(m.URL, "https://") {
		t.Fatalf("server at %s, want HTTPS", m.URL)
	}
	fp := m.CA.RootFingerprint()
	u := NewUser(t)
	signup := func(args ...string) Result {
		return u.Run(password+"\n", append([]string{"--server", m.URL, "signup", "--email", "ada@example.com", "--name", "Ada", "--password-stdin"}, args...)...)
	}

	r := signup()
	if r.Code != cli.ExitDenied || !strings.Contains(r.Stderr, "not trusted") || !strings.Contains(r.Stderr, "--ca-fingerprint") {
		t.Fatalf("signup without trust: exit %d %s", r.Code, r.Stderr)
	}
	wrong := "sha256:" + strings.Repeat("ab", 32)
	if r := signup("--ca-fingerprint", wrong); r.Code != cli.ExitDenied || !strings.Contains(r.Stderr, "pinned") {
		t.Fatalf("signup with a wrong fingerprint: exit %d %s", r.Code, r.Stderr)
	}
	if r := signup("--ca-fingerprint", "sha256:xyz"); r.Code != cli.ExitUsage {
		t.Fatalf("signup with a malformed fingerprint: exit %d %s", r.Code, r.Stderr)
	}
	// Colons and upper case, as other tools print fingerprints, are fine.
	colons := strings.ToUpper(strings.TrimPrefix(fp, "sha256:"))
	var parts []string
	for i := 0; i < len(colons); i += 2 {
		parts = append(parts, colons[i:i+2])
	}
	signupOK := signup("--ca-fingerprint", strings.Join(parts, ":"))
	if signupOK.Code != 0 {
		t.Fatalf("signup with the fingerprint: exit %d %s", signupOK.Code, signupOK.Stderr)
	}
	u.MustRun(password+"\n", "--server", m.URL, "--ca-fingerprint", fp, "login", "--email", "ada@example.com", "--password-stdin")
	// Saved with the login: no flag needed any more.
	if r := u.MustRun("", "whoami"); !strings.Contains(r.Stdout, "ada@example.com") {
		t.Fatalf("whoami: %s", r.Stdout)
	}
	if got := u.credentials()["ca_fingerprint"]; got != fp {
		t.Errorf("saved fingerprint %v, want %s", got, fp)
	}

	// The CA file works too, and replaces the pin in the saved login.
	chain := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(chain, m.CA.ChainPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	u.MustRun(password+"\n", "--server", m.URL, "--ca-file", chain, "login", "--email", "ada@example.com", "--password-stdin")
	if c := u.credentials(); c["ca_fingerprint"] != nil || !strings.Contains(c["ca"].(string), "BEGIN CERTIFICATE") {
		t.Errorf("saved trust after --ca-file: %v", c)
	}
	u.MustRun("", "whoami")
	// Plain http:// to an HTTPS server says so.
	plain := "http://" + strings.TrimPrefix(m.URL, "https://")
	if r := u.Run(password+"\n", "--server", plain, "login", "--email", "ada@example.com", "--password-stdin"); r.Code != cli.ExitUsage || !strings.Contains(r.Stderr, "use "+m.URL) {
		t.Errorf("login over http://: exit %d %s", r.Code, r.Stderr)
	}
}
