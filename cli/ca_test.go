package cli_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/ca"
)

func TestCACommands(t *testing.T) {
	m := apptest.StartEngine(t, apptest.Engines()[0])
	admin := NewUser(t)
	admin.MustLogin(m.URL, "admin@example.com")
	alice := NewUser(t)
	alice.MustLogin(m.URL, "alice@example.com")
	dir := t.TempDir()
	f := func(name string) string { return filepath.Join(dir, name) }

	// The chain on stdout, or in a file.
	if r := alice.MustRun("", "ca", "chain"); strings.Count(r.Stdout, "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("chain printed %q", r.Stdout)
	}
	if chain := mustJSON[ca.Chain](t, alice.MustRun("", "ca", "chain", "-o", "json").Stdout); !strings.HasPrefix(chain.RootFingerprint, "sha256:") || chain.CRLURL != m.URL+"/crl" {
		t.Fatalf("json chain %+v", chain)
	}

	// A user certificate with a generated key: three files, the key 0600.
	r := alice.MustRun("", "ca", "issue", "--out", f("alice"))
	if !strings.Contains(r.Stdout, "Issued user certificate") || !strings.Contains(r.Stdout, "alice@example.com") || !strings.Contains(r.Stderr, "keep it safe") {
		t.Fatalf("issue printed %q / %q", r.Stdout, r.Stderr)
	}
	if st, err := os.Stat(f("alice.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v", st, err)
	}
	for _, name := range []string{"alice.crt", "alice-chain.pem"} {
		if _, err := os.Stat(f(name)); err != nil {
			t.Fatal(err)
		}
	}
	if r := alice.Run("", "ca", "issue", "--out", f("alice")); r.Code == 0 || !strings.Contains(r.Stderr, "exists already") {
		t.Fatalf("overwrite: %+v", r)
	}

	// From a CSR: no key file; -o json prints the certificate.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice@example.com"}}, key)
	if err := os.WriteFile(f("alice.csr"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	c := mustJSON[ca.Certificate](t, alice.MustRun("", "ca", "issue", "--csr", f("alice.csr"), "--ttl", "48h", "--out", f("fromcsr"), "-o", "json").Stdout)
	if c.CommonName != "alice@example.com" || c.Kind != ca.User {
		t.Fatalf("issued from CSR %+v", c)
	}
	if _, err := os.Stat(f("fromcsr.key")); !os.IsNotExist(err) {
		t.Fatalf("a key file for a CSR: %v", err)
	}

	// What a user may not do, and bad flags.
	if r := alice.Run("", "ca", "issue", "--kind", "server", "--cn", "x.io", "--dns", "x.io", "--out", f("x")); r.Code == 0 || !strings.Contains(r.Stderr, "only platform admins") {
		t.Fatalf("user issues a server certificate: %+v", r)
	}
	if r := alice.Run("", "ca", "issue", "--kind", "robot"); r.Code == 0 || !strings.Contains(r.Stderr, "--kind") {
		t.Fatalf("bad kind: %+v", r)
	}
	if r := alice.Run("", "ca", "issue", "--csr", f("missing.csr")); r.Code == 0 || !strings.Contains(r.Stderr, "cannot read the CSR") {
		t.Fatalf("missing CSR: %+v", r)
	}

	// Admins issue servers, list everything, revoke.
	r = admin.MustRun("", "ca", "issue", "--kind", "server", "--cn", "api.example.com", "--dns", "api.example.com,www.example.com", "--ip", "10.0.0.5", "--out", f("api"))
	if !strings.Contains(r.Stdout, "server certificate") {
		t.Fatalf("admin issue printed %q", r.Stdout)
	}
	servers := mustJSON[list[ca.Certificate]](t, admin.MustRun("", "ca", "list", "--kind", "server", "-o", "json").Stdout)
	if len(servers.Items) != 1 || len(servers.Items[0].DNSNames) != 2 || servers.Items[0].IPAddresses[0] != "10.0.0.5" {
		t.Fatalf("server list %+v", servers)
	}
	serial := servers.Items[0].Serial
	if r := alice.MustRun("", "ca", "list"); strings.Contains(r.Stdout, serial) || strings.Count(r.Stdout, "alice@example.com") != 2 {
		t.Fatalf("alice's list:\n%s", r.Stdout)
	}
	if r := admin.MustRun("", "ca", "describe", serial); !strings.Contains(r.Stdout, "www.example.com") || !strings.Contains(r.Stdout, "valid") {
		t.Fatalf("describe:\n%s", r.Stdout)
	}
	r = admin.MustRun("", "ca", "renew", serial, "--out", f("api2"))
	if !strings.Contains(r.Stdout, "Renewed as server certificate") {
		t.Fatalf("renew printed %q", r.Stdout)
	}
	if r := admin.Run("", "ca", "revoke", serial, "--reason", "stolen"); r.Code == 0 || !strings.Contains(r.Stderr, "--reason") {
		t.Fatalf("bad reason: %+v", r)
	}
	if r := admin.MustRun("", "ca", "revoke", serial, "--reason", "superseded"); !strings.Contains(r.Stdout, "Revoked server certificate "+serial) {
		t.Fatalf("revoke printed %q", r.Stdout)
	}
	if r := admin.MustRun("", "ca", "list", "--status", "revoked"); !strings.Contains(r.Stdout, serial) || !strings.Contains(r.Stdout, "revoked") {
		t.Fatalf("revoked list:\n%s", r.Stdout)
	}
	if r := alice.Run("", "ca", "revoke", serial); r.Code == 0 || !strings.Contains(r.Stderr, "not found") {
		t.Fatalf("alice revokes the admin's: %+v", r)
	}
}
