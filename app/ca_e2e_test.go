package app_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/cli"
)

// cliUser runs the real CLI in-process with a config directory of its own.
type cliUser struct {
	t   *testing.T
	dir string
}

func (u cliUser) run(stdin string, args ...string) string {
	u.t.Helper()
	var out, errb bytes.Buffer
	root := cli.New()
	root.SetArgs(append([]string{"--config-dir", u.dir}, args...))
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errb)
	if err := root.ExecuteContext(context.Background()); err != nil {
		u.t.Fatalf("cove %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// openssl runs an openssl command and returns its combined output and
// whether it exited 0.
func openssl(t *testing.T, args ...string) (string, bool) {
	t.Helper()
	out, err := exec.Command("openssl", args...).CombinedOutput()
	t.Logf("openssl %s:\n%s", strings.Join(args, " "), out)
	return string(out), err == nil
}

// TestCAWithOpenSSL checks Cove's CA against the reference client: the
// real openssl asks the OCSP responder about certificates issued through
// the CLI, before and after a revocation made through the CLI, and
// verifies them against the CRL served at /crl.
func TestCAWithOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed; the CA's interoperability test needs it")
	}
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			t.Setenv(cli.EnvServer, "")
			t.Setenv(cli.EnvToken, "")
			m := apptest.StartEngine(t, e)
			dir := t.TempDir()
			u := cliUser{t: t, dir: filepath.Join(dir, "cfg")}
			u.run(pw+"\n", "--server", m.URL, "signup", "--email", "ada@example.com", "--name", "Ada", "--password-stdin")
			u.run(pw+"\n", "--server", m.URL, "login", "--email", "ada@example.com", "--password-stdin")

			f := func(name string) string { return filepath.Join(dir, name) }
			u.run("", "ca", "chain", "--file", f("chain.pem"))
			chain, err := os.ReadFile(f("chain.pem"))
			if err != nil {
				t.Fatal(err)
			}
			// -issuer takes the intermediate alone.
			inter, _ := pem.Decode(chain)
			if err := os.WriteFile(f("intermediate.pem"), pem.EncodeToMemory(inter), 0o600); err != nil {
				t.Fatal(err)
			}

			// Two certificates: one stays good, one is revoked.
			u.run("", "ca", "issue", "--out", f("good"))
			u.run("", "ca", "issue", "--kind", "server", "--cn", "api.example.com", "--dns", "api.example.com", "--ip", "127.0.0.1", "--out", f("doomed"))
			for _, name := range []string{"good.key", "doomed.key"} {
				if st, err := os.Stat(f(name)); err != nil || st.Mode().Perm() != 0o600 {
					t.Fatalf("%s: %v %v", name, st, err)
				}
			}
			serial := strings.TrimSpace(u.run("", "ca", "list", "--kind", "server", "-o", "json"))
			serial = serial[strings.Index(serial, `"serial": "`)+len(`"serial": "`):]
			serial = serial[:strings.Index(serial, `"`)]

			ocspAsk := func(cert string) string {
				out, ok := openssl(t, "ocsp", "-issuer", f("intermediate.pem"), "-cert", f(cert), "-url", m.URL+"/ocsp", "-CAfile", f("chain.pem"))
				if !ok || !strings.Contains(out, "Response verify OK") {
					t.Fatalf("openssl ocsp did not verify the answer:\n%s", out)
				}
				if strings.Contains(out, "WARNING") {
					t.Fatalf("openssl ocsp warns (nonce not echoed?):\n%s", out)
				}
				return out
			}
			for _, c := range []string{"good.crt", "doomed.crt"} {
				if out := ocspAsk(c); !strings.Contains(out, f(c)+": good") || !strings.Contains(out, "This Update") || !strings.Contains(out, "Next Update") {
					t.Fatalf("%s is not good by OCSP:\n%s", c, out)
				}
			}

			u.run("", "ca", "revoke", serial, "--reason", "key_compromise")
			if out := ocspAsk("doomed.crt"); !strings.Contains(out, f("doomed.crt")+": revoked") || !strings.Contains(out, "keyCompromise") {
				t.Fatalf("revoked certificate not revoked by OCSP:\n%s", out)
			}
			if out := ocspAsk("good.crt"); !strings.Contains(out, f("good.crt")+": good") {
				t.Fatalf("good certificate not good after another's revocation:\n%s", out)
			}

			// The CRL from /crl, in DER, converted to PEM by openssl.
			res, err := client(t, m.URL).CRL(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f("crl.der"), res, 0o600); err != nil {
				t.Fatal(err)
			}
			if out, ok := openssl(t, "crl", "-inform", "DER", "-in", f("crl.der"), "-out", f("crl.pem")); !ok {
				t.Fatalf("openssl crl cannot read /crl:\n%s", out)
			}
			if out, ok := openssl(t, "verify", "-crl_check", "-CAfile", f("chain.pem"), "-CRLfile", f("crl.pem"), f("good.crt")); !ok || !strings.Contains(out, ": OK") {
				t.Fatalf("openssl verify rejects the good certificate:\n%s", out)
			}
			if out, ok := openssl(t, "verify", "-crl_check", "-CAfile", f("chain.pem"), "-CRLfile", f("crl.pem"), f("doomed.crt")); ok || !strings.Contains(out, "certificate revoked") {
				t.Fatalf("openssl verify accepts the revoked certificate:\n%s", out)
			}
		})
	}
}

// TestCAPassphraseAtStart: keys written with one passphrase do not open
// with another, and the start fails saying so.
func TestCAPassphraseAtStart(t *testing.T) {
	cfg := apptest.Config(t.TempDir(), "")
	start := func(pass string) error {
		c := cfg
		c.CA.Passphrase = pass
		m := app.NewMain(c, io.Discard, io.Discard)
		m.CAScryptWorkFactor = 10
		err := m.Run(context.Background())
		if cerr := m.Close(); err == nil {
			err = cerr
		}
		return err
	}
	if err := start("first passphrase"); err != nil {
		t.Fatal(err)
	}
	err := start("second passphrase")
	if cove.ErrorCode(err) != cove.Invalid || !strings.Contains(err.Error(), "ca.passphrase does not decrypt") {
		t.Fatalf("start with a wrong passphrase: %v", err)
	}
	if err := start("first passphrase"); err != nil {
		t.Fatalf("start with the right passphrase again: %v", err)
	}
}
