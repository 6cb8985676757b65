package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/ca"
	"github.com/covecompute/cove/sqlstore"
)

var (
	admin = cove.Principal{UserID: "usr_admin", Email: "admin@example.com", Admin: true}
	alice = cove.Principal{UserID: "usr_alice", Email: "alice@example.com"}
	bob   = cove.Principal{UserID: "usr_bob", Email: "bob@example.com"}
)

// env is a CA over a real SQLite store, with a clock tests can move.
type env struct {
	ctx   context.Context
	db    *sqlstore.DB
	dir   string
	clock *clock
	heard *heard
}

type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time              { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration)     { c.off.Add(int64(d)) }
func newEnv(t testing.TB) *env               { return newEnvAt(t, t.TempDir()) }
func (v *env) open(t testing.TB) *ca.Service { return v.openWith(t, ca.Config{}) }

func newEnvAt(t testing.TB, dir string) *env {
	t.Helper()
	db, err := sqlstore.Open(context.Background(), filepath.Join(dir, "cove.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &env{ctx: context.Background(), db: db, dir: filepath.Join(dir, "ca"), clock: &clock{}, heard: &heard{}}
}

// openWith opens a CA on the env's store and key directory; cfg's zero
// fields get the env's.
func (v *env) openWith(t testing.TB, cfg ca.Config) *ca.Service {
	t.Helper()
	svc, err := v.try(cfg)
	if err != nil {
		t.Fatalf("open CA: %v", err)
	}
	t.Cleanup(svc.Close)
	return svc
}

func (v *env) try(cfg ca.Config) (*ca.Service, error) {
	if cfg.Dir == "" {
		cfg.Dir = v.dir
	}
	if cfg.Now == nil {
		cfg.Now = v.clock.now
	}
	if cfg.BaseURL == nil {
		cfg.BaseURL = func() string { return "http://cove.test" }
	}
	if cfg.Revocations == nil {
		cfg.Revocations = v.heard
	}
	cfg.ScryptWorkFactor = 10
	return ca.Open(v.ctx, sqlstore.NewCAStore(v.db), cfg)
}

// heard records revocations.
type heard struct {
	mu      sync.Mutex
	serials []string
}

func (h *heard) CertificateRevoked(_ context.Context, c *ca.Certificate) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.serials = append(h.serials, c.Serial)
}

func (h *heard) has(serial string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.serials {
		if s == serial {
			return true
		}
	}
	return false
}

// csr makes a PEM CSR for key with tmpl's names.
func csr(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func parse(t testing.TB, pemBytes []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		t.Fatalf("not PEM: %q", pemBytes)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustIssue(t testing.TB, svc *ca.Service, p cove.Principal, r ca.IssueRequest) *ca.Issued {
	t.Helper()
	iss, err := svc.Issue(context.Background(), p, r)
	if err != nil {
		t.Fatalf("issue %+v: %v", r, err)
	}
	return iss
}

func wantCode(t *testing.T, what string, err error, code cove.Code) {
	t.Helper()
	if cove.ErrorCode(err) != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
}

func nodeID() string { return cove.NewID("node") }

func TestHierarchy(t *testing.T) {
	v := newEnv(t)
	svc := v.open(t)
	chain := svc.ChainPEM()
	var certs []*x509.Certificate
	for rest := chain; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 2 || !certs[0].IsCA || !certs[1].IsCA || certs[0].CheckSignatureFrom(certs[1]) != nil {
		t.Fatalf("chain is not intermediate then root: %d certificates", len(certs))
	}
	inter, root := certs[0], certs[1]
	if yrs := root.NotAfter.Sub(root.NotBefore).Hours() / 24 / 365; yrs < 9.9 || yrs > 10.1 {
		t.Errorf("root lasts %.1f years, want 10", yrs)
	}
	if yrs := inter.NotAfter.Sub(inter.NotBefore).Hours() / 24 / 365; yrs < 4.9 || yrs > 5.1 {
		t.Errorf("intermediate lasts %.1f years, want 5", yrs)
	}
	if k, ok := root.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("root key is %T, want ECDSA P-256", root.PublicKey)
	}
	if !strings.HasPrefix(svc.RootFingerprint(), "sha256:") || len(svc.RootFingerprint()) != 7+64 {
		t.Errorf("root fingerprint %q", svc.RootFingerprint())
	}
	// Keys are private to the owner.
	st, err := os.Stat(v.dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("key dir mode %v %v", st.Mode(), err)
	}
	for _, f := range []string{"root.key", "intermediate.key", "root.pem", "intermediate.pem"} {
		if st, err := os.Stat(filepath.Join(v.dir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st, err)
		}
	}
	// A second start loads the same CA.
	again := v.openWith(t, ca.Config{})
	if again.RootFingerprint() != svc.RootFingerprint() {
		t.Fatal("a restart made a new root")
	}
}

func TestIssue(t *testing.T) {
	v := newEnv(t)
	svc := v.open(t)
	node := nodeID()

	iss, err := svc.IssueNode(v.ctx, node, csr(t, p256(t), &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}))
	if err != nil {
		t.Fatal(err)
	}
	leaf := parse(t, iss.CertPEM)
	c := iss.Certificate
	if leaf.Subject.CommonName != node || c.Owner != node || c.Kind != ca.Node || len(iss.KeyPEM) != 0 || !bytes.Equal(iss.ChainPEM, svc.ChainPEM()) {
		t.Fatalf("node certificate %+v", c)
	}
	if leaf.SerialNumber.BitLen() < 64 || c.Serial != strings.ToLower(leaf.SerialNumber.Text(16)) || !strings.HasPrefix(c.Fingerprint, "sha256:") {
		t.Fatalf("serial %s, fingerprint %s", c.Serial, c.Fingerprint)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("node EKU %v", leaf.ExtKeyUsage)
	}
	if len(leaf.OCSPServer) != 1 || leaf.OCSPServer[0] != "http://cove.test/ocsp" || len(leaf.CRLDistributionPoints) != 1 || leaf.CRLDistributionPoints[0] != "http://cove.test/crl" {
		t.Fatalf("AIA %v, CRL DP %v", leaf.OCSPServer, leaf.CRLDistributionPoints)
	}
	if d := c.NotAfter.Sub(c.NotBefore); d < ca.DefaultNodeTTL || d > ca.DefaultNodeTTL+2*time.Minute {
		t.Fatalf("node certificate lasts %s", d)
	}
	got, err := svc.VerifyClient(v.ctx, leaf)
	if err != nil || got.Serial != c.Serial || got.Owner != node {
		t.Fatalf("verify node certificate: %+v %v", got, err)
	}

	// A server certificate with a generated key, for hosts.
	srv, err := svc.IssueServer(v.ctx, []string{"cove.example.com", "127.0.0.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	sl := parse(t, srv.CertPEM)
	if len(srv.KeyPEM) == 0 || sl.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || len(sl.DNSNames) != 1 || len(sl.IPAddresses) != 2 {
		t.Fatalf("server certificate %+v", srv.Certificate)
	}
	if _, err := sl.Verify(x509.VerifyOptions{Roots: svc.Roots(), Intermediates: svc.Intermediates(), DNSName: "cove.example.com"}); err != nil {
		t.Fatalf("server certificate does not verify for its host: %v", err)
	}
	wantCode(t, "server certificate as a client", func() error { _, err := svc.VerifyClient(v.ctx, sl); return err }(), cove.Unauthenticated)

	// A user issues their own; keys of each accepted type.
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, key := range map[string]crypto.Signer{"rsa2048": rsaKey, "ed25519": edKey, "p384": p384} {
		iss := mustIssue(t, svc, alice, ca.IssueRequest{CSRPEM: csr(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: alice.Email}})})
		if iss.Certificate.Kind != ca.User || iss.Certificate.Owner != alice.UserID || parse(t, iss.CertPEM).EmailAddresses[0] != alice.Email {
			t.Fatalf("%s: %+v", name, iss.Certificate)
		}
	}
	gen := mustIssue(t, svc, alice, ca.IssueRequest{TTL: time.Hour})
	if gen.Certificate.CommonName != alice.Email || len(gen.KeyPEM) == 0 || gen.Certificate.NotAfter.Sub(gen.Certificate.NotBefore) > time.Hour+2*time.Minute {
		t.Fatalf("generated user certificate %+v", gen.Certificate)
	}
	// Admins issue any kind with any names, for anyone.
	ag := mustIssue(t, svc, admin, ca.IssueRequest{Kind: ca.Agent, CommonName: "run_1", Owner: "usr_alice"})
	if ag.Certificate.Owner != "usr_alice" || ag.Certificate.NotAfter.Sub(ag.Certificate.NotBefore) > ca.DefaultAgentTTL+2*time.Minute {
		t.Fatalf("agent certificate %+v", ag.Certificate)
	}

	// Each issue is audited.
	es, err := sqlstore.NewAuditStore(v.db).FindAudit(v.ctx, audit.Filter{Action: "ca.certificate.issue", Page: cove.Page{Limit: 100}})
	if err != nil || len(es) != 7 {
		t.Fatalf("audit entries %d %v", len(es), err)
	}
}

func TestIssueRejects(t *testing.T) {
	v := newEnv(t)
	svc := v.open(t)
	key := p256(t)
	good := csr(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: alice.Email}})
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	// A CSR whose signature does not match its content.
	b, _ := pem.Decode(good)
	tampered := bytes.Clone(b.Bytes)
	tampered[len(tampered)-5] ^= 0xff
	badSig := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered})

	cases := []struct {
		name string
		p    cove.Principal
		r    ca.IssueRequest
		code cove.Code
	}{
		{"anonymous", cove.Principal{}, ca.IssueRequest{}, cove.Unauthenticated},
		{"malformed CSR", alice, ca.IssueRequest{CSRPEM: []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")}, cove.Invalid},
		{"not PEM", alice, ca.IssueRequest{CSRPEM: []byte("hello")}, cove.Invalid},
		{"bad CSR signature", alice, ca.IssueRequest{CSRPEM: badSig}, cove.Invalid},
		{"RSA-1024", alice, ca.IssueRequest{CSRPEM: csr(t, rsa1024, &x509.CertificateRequest{Subject: pkix.Name{CommonName: alice.Email}})}, cove.Invalid},
		{"P-224", admin, ca.IssueRequest{CSRPEM: csr(t, p224, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}})}, cove.Invalid},
		{"CSR for another's email", alice, ca.IssueRequest{CSRPEM: csr(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: bob.Email}})}, cove.Forbidden},
		{"CSR with a DNS name", alice, ca.IssueRequest{CSRPEM: csr(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: alice.Email}, DNSNames: []string{"evil.example.com"}})}, cove.Forbidden},
		{"CSR with another email", admin, ca.IssueRequest{CSRPEM: csr(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a@x.io"}, EmailAddresses: []string{"b@x.io"}})}, cove.Forbidden},
		{"another's email", alice, ca.IssueRequest{CommonName: bob.Email}, cove.Forbidden},
		{"server by a user", alice, ca.IssueRequest{Kind: ca.Server, CommonName: "x", DNSNames: []string{"x.io"}}, cove.Forbidden},
		{"node by a user", alice, ca.IssueRequest{Kind: ca.Node, CommonName: nodeID()}, cove.Forbidden},
		{"for someone else", alice, ca.IssueRequest{Owner: bob.UserID}, cove.Forbidden},
		{"unknown kind", admin, ca.IssueRequest{Kind: "robot", CommonName: "x"}, cove.Invalid},
		{"bad DNS name", admin, ca.IssueRequest{Kind: ca.Server, CommonName: "x", DNSNames: []string{"bad_name!"}}, cove.Invalid},
		{"bad IP", admin, ca.IssueRequest{Kind: ca.Server, CommonName: "x", IPAddresses: []string{"300.1.1.1"}}, cove.Invalid},
		{"server without names", admin, ca.IssueRequest{Kind: ca.Server, CommonName: "x"}, cove.Invalid},
		{"node named otherwise", admin, ca.IssueRequest{Kind: ca.Node, CommonName: "not-a-node"}, cove.Invalid},
		{"ttl too long", alice, ca.IssueRequest{TTL: ca.DefaultUserTTL + time.Hour}, cove.Invalid},
		{"ttl too short", alice, ca.IssueRequest{TTL: time.Minute}, cove.Invalid},
		{"control characters", admin, ca.IssueRequest{Kind: ca.Agent, CommonName: "a\nb"}, cove.Invalid},
		{"user without an email", admin, ca.IssueRequest{Kind: ca.User, CommonName: "just a name"}, cove.Invalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := svc.Issue(v.ctx, c.p, c.r)
			wantCode(t, c.name, err, c.code)
			if cove.ErrorMessage(err) == "" || cove.ErrorMessage(err) == "internal error" {
				t.Fatalf("no message a user can act on: %v", err)
			}
		})
	}
	if _, err := svc.IssueNode(v.ctx, "node.evil", nil); cove.ErrorCode(err) != cove.Invalid {
		t.Fatalf("node ID with a dot: %v", err)
	}
	if _, err := svc.IssueNode(v.ctx, nodeID(), csr(t, rsa1024, &x509.CertificateRequest{})); cove.ErrorCode(err) != cove.Invalid {
		t.Fatalf("node CSR with RSA-1024: %v", err)
	}
	if _, err := svc.IssueServer(v.ctx, nil); cove.ErrorCode(err) != cove.Invalid {
		t.Fatalf("server without hosts: %v", err)
	}
	// Refusals are audited.
	es, err := sqlstore.NewAuditStore(v.db).FindAudit(v.ctx, audit.Filter{ActorID: alice.UserID, Page: cove.Page{Limit: 100}})
	if err != nil || len(es) == 0 || es[0].Outcome != audit.Denied {
		t.Fatalf("denied issuance not audited: %+v %v", es, err)
	}
}

func TestRevoke(t *testing.T) {
	v := newEnv(t)
	svc := v.open(t)
	node := nodeID()
	iss, err := svc.IssueNode(v.ctx, node, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := parse(t, iss.CertPEM)
	serial := iss.Certificate.Serial
	if _, err := svc.VerifyClient(v.ctx, leaf); err != nil { // warms the cache
		t.Fatal(err)
	}
	wantCode(t, "bad reason", func() error { _, err := svc.Revoke(v.ctx, admin, serial, "bored"); return err }(), cove.Invalid)
	wantCode(t, "a user revokes a node", func() error { _, err := svc.Revoke(v.ctx, alice, serial, ""); return err }(), cove.NotFound)
	wantCode(t, "bad serial", func() error { _, err := svc.Revoke(v.ctx, admin, "xyz", ""); return err }(), cove.Invalid)

	c, err := svc.Revoke(v.ctx, admin, strings.ToUpper(serial), "key_compromise")
	if err != nil || c.Status != ca.Revoked || c.RevocationReason != "key_compromise" {
		t.Fatalf("revoke: %+v %v", c, err)
	}
	// At once in this process, though VerifyClient had cached the
	// certificate as valid.
	wantCode(t, "revoked certificate", func() error { _, err := svc.VerifyClient(v.ctx, leaf); return err }(), cove.Unauthenticated)
	if !v.heard.has(serial) {
		t.Fatal("Revocations was not told")
	}
	wantCode(t, "revoke twice", func() error { _, err := svc.Revoke(v.ctx, admin, serial, ""); return err }(), cove.Conflict)
	wantCode(t, "renew revoked", func() error { _, err := svc.Renew(v.ctx, admin, serial, nil); return err }(), cove.Conflict)
	wantCode(t, "renew revoked node", func() error { _, err := svc.RenewNode(v.ctx, c, nil); return err }(), cove.Unauthenticated)

	// The CRL lists it with its reason.
	der, err := svc.CRL(v.ctx)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	inter := parse(t, svc.ChainPEM())
	if err := crl.CheckSignatureFrom(inter); err != nil {
		t.Fatalf("CRL not signed by the intermediate: %v", err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(leaf.SerialNumber) != 0 || crl.RevokedCertificateEntries[0].ReasonCode != ocsp.KeyCompromise {
		t.Fatalf("CRL entries %+v", crl.RevokedCertificateEntries)
	}
	if crl.Number.Int64() < 2 {
		t.Fatalf("CRL number %v did not increase at the revocation", crl.Number)
	}

	// A user revokes their own certificate, not another's.
	own := mustIssue(t, svc, alice, ca.IssueRequest{})
	wantCode(t, "bob revokes alice's", func() error { _, err := svc.Revoke(v.ctx, bob, own.Certificate.Serial, ""); return err }(), cove.NotFound)
	if _, err := svc.Revoke(v.ctx, alice, own.Certificate.Serial, "superseded"); err != nil {
		t.Fatal(err)
	}
	der2, _ := svc.CRL(v.ctx)
	crl2, err := x509.ParseRevocationList(der2)
	if err != nil || crl2.Number.Cmp(crl.Number) <= 0 || len(crl2.RevokedCertificateEntries) != 2 {
		t.Fatalf("second CRL: number %v entries %d %v", crl2.Number, len(crl2.RevokedCertificateEntries), err)
	}
}

func TestVerifyClientRejects(t *testing.T) {
	v := newEnv(t)
	svc := v.open(t)
	iss, err := svc.IssueNode(v.ctx, nodeID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := parse(t, iss.CertPEM)

	// Another CA's certificate, with the same serial and names.
	other := newEnv(t).open(t)
	foreign, err := other.IssueNode(v.ctx, iss.Certificate.CommonName, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, "another CA's certificate", func() error { _, err := svc.VerifyClient(v.ctx, parse(t, foreign.CertPEM)); return err }(), cove.Unauthenticated)
	// A self-signed one.
	key := p256(t)
	tmpl := &x509.Certificate{SerialNumber: leaf.SerialNumber, Subject: leaf.Subject, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := x509.ParseCertificate(der)
	wantCode(t, "self-signed certificate", func() error { _, err := svc.VerifyClient(v.ctx, self); return err }(), cove.Unauthenticated)
	wantCode(t, "no certificate", func() error { _, err := svc.VerifyClient(v.ctx, nil); return err }(), cove.Unauthenticated)

	// Expired: the clock moves past its end.
	v.clock.advance(ca.DefaultNodeTTL + time.Hour)
	wantCode(t, "expired certificate", func() error { _, err := svc.VerifyClient(v.ctx, leaf); return err }(), cove.Unauthenticated)
	wantCode(t, "renew an expired node certificate", func() error { _, err := svc.RenewNode(v.ctx, iss.Certificate, nil); return err }(), cove.Unauthenticated)
}

func TestRenew(t *testing.T) {
	v := newEnv(t)
	svc := v.open(t)
	node := nodeID()
	first, err := svc.IssueNode(v.ctx, node, nil)
	if err != nil {
		t.Fatal(err)
	}
	current, err := svc.VerifyClient(v.ctx, parse(t, first.CertPEM))
	if err != nil {
		t.Fatal(err)
	}
	key := p256(t)
	wantCode(t, "node CSR for another name", func() error {
		_, err := svc.RenewNode(v.ctx, current, csr(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: nodeID()}}))
		return err
	}(), cove.Forbidden)
	wantCode(t, "node CSR with a DNS name", func() error {
		_, err := svc.RenewNode(v.ctx, current, csr(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}, DNSNames: []string{"x.io"}}))
		return err
	}(), cove.Forbidden)
	next, err := svc.RenewNode(v.ctx, current, csr(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}}))
	if err != nil {
		t.Fatal(err)
	}
	if next.Certificate.RenewedFrom != current.Serial || next.Certificate.CommonName != node || next.Certificate.Owner != node || next.Certificate.Serial == current.Serial {
		t.Fatalf("renewed %+v", next.Certificate)
	}
	if !parse(t, next.CertPEM).PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Fatal("renewal did not certify the CSR's key")
	}
	// The old certificate stays valid.
	if _, err := svc.VerifyClient(v.ctx, parse(t, first.CertPEM)); err != nil {
		t.Fatalf("old certificate after renewal: %v", err)
	}
	agent := mustIssue(t, svc, admin, ca.IssueRequest{Kind: ca.Agent, CommonName: "agent-1"})
	agentCur, _ := svc.VerifyClient(v.ctx, parse(t, agent.CertPEM))
	wantCode(t, "RenewNode of an agent", func() error { _, err := svc.RenewNode(v.ctx, agentCur, nil); return err }(), cove.Forbidden)

	// A user renews their own, for the same name only.
	own := mustIssue(t, svc, alice, ca.IssueRequest{})
	wantCode(t, "renew with another's email", func() error {
		_, err := svc.Renew(v.ctx, alice, own.Certificate.Serial, csr(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: bob.Email}}))
		return err
	}(), cove.Forbidden)
	wantCode(t, "bob renews alice's", func() error { _, err := svc.Renew(v.ctx, bob, own.Certificate.Serial, nil); return err }(), cove.NotFound)
	r, err := svc.Renew(v.ctx, alice, own.Certificate.Serial, nil)
	if err != nil || len(r.KeyPEM) == 0 || r.Certificate.CommonName != alice.Email || r.Certificate.RenewedFrom != own.Certificate.Serial {
		t.Fatalf("renew own: %+v %v", r, err)
	}
	wantCode(t, "a user renews a node's", func() error { _, err := svc.Renew(v.ctx, alice, next.Certificate.Serial, nil); return err }(), cove.NotFound)
}

func TestList(t *testing.T) {
	v := newEnv(t)
	svc := v.open(t)
	for range 3 {
		mustIssue(t, svc, alice, ca.IssueRequest{})
	}
	bobs := mustIssue(t, svc, bob, ca.IssueRequest{})
	if _, err := svc.IssueNode(v.ctx, nodeID(), nil); err != nil {
		t.Fatal(err)
	}
	short := mustIssue(t, svc, alice, ca.IssueRequest{TTL: 10 * time.Minute})
	if _, err := svc.Revoke(v.ctx, bob, bobs.Certificate.Serial, ""); err != nil {
		t.Fatal(err)
	}

	mine, err := svc.List(v.ctx, alice, ca.Filter{})
	if err != nil || len(mine) != 4 {
		t.Fatalf("alice's certificates: %d %v", len(mine), err)
	}
	wantCode(t, "alice lists bob's", func() error { _, err := svc.List(v.ctx, alice, ca.Filter{Owner: bob.UserID}); return err }(), cove.Forbidden)
	wantCode(t, "bad status", func() error { _, err := svc.List(v.ctx, admin, ca.Filter{Status: "lost"}); return err }(), cove.Invalid)
	wantCode(t, "bad kind", func() error { _, err := svc.List(v.ctx, admin, ca.Filter{Kind: "robot"}); return err }(), cove.Invalid)

	// Pages follow the cursor to the end, in issue order.
	var all []*ca.Certificate
	page := cove.Page{Limit: 2}
	for {
		cs, err := svc.List(v.ctx, admin, ca.Filter{Page: page})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, cs...)
		next := cove.NextCursor(cs, page.Limit, func(c *ca.Certificate) string { return c.ID })
		if next == "" {
			break
		}
		page.After, _ = cove.DecodeCursor(next)
	}
	if len(all) != 6 {
		t.Fatalf("paged through %d certificates, want 6", len(all))
	}
	count := func(f ca.Filter) int {
		cs, err := svc.List(v.ctx, admin, f)
		if err != nil {
			t.Fatal(err)
		}
		return len(cs)
	}
	if n := count(ca.Filter{Kind: ca.Node}); n != 1 {
		t.Errorf("node certificates: %d", n)
	}
	if n := count(ca.Filter{Status: ca.Revoked}); n != 1 {
		t.Errorf("revoked: %d", n)
	}
	if n := count(ca.Filter{Owner: alice.UserID, Status: ca.Valid}); n != 4 {
		t.Errorf("alice's valid: %d", n)
	}
	v.clock.advance(time.Hour)
	if n := count(ca.Filter{Status: ca.Expired}); n != 1 {
		t.Errorf("expired after an hour: %d", n)
	}
	if got, err := svc.Get(v.ctx, alice, short.Certificate.Serial); err != nil || got.Status != ca.Expired {
		t.Errorf("get expired: %+v %v", got, err)
	}
}

func TestPassphrase(t *testing.T) {
	v := newEnv(t)
	first := v.openWith(t, ca.Config{Passphrase: "correct horse"})
	first.Close()
	data, err := os.ReadFile(filepath.Join(v.dir, "intermediate.key"))
	if err != nil || !bytes.HasPrefix(data, []byte("age-encryption.org/v1")) || bytes.Contains(data, []byte("PRIVATE KEY")) {
		t.Fatalf("intermediate key is not encrypted: %.40q %v", data, err)
	}
	_, err = v.try(ca.Config{Passphrase: "wrong horse"})
	if cove.ErrorCode(err) != cove.Invalid || !strings.Contains(cove.ErrorMessage(err), "passphrase is wrong") {
		t.Fatalf("wrong passphrase: %v", err)
	}
	_, err = v.try(ca.Config{})
	if cove.ErrorCode(err) != cove.Invalid || !strings.Contains(cove.ErrorMessage(err), "ca.passphrase") {
		t.Fatalf("no passphrase: %v", err)
	}
	again := v.openWith(t, ca.Config{Passphrase: "correct horse"})
	if again.RootFingerprint() != first.RootFingerprint() {
		t.Fatal("the right passphrase opened another CA")
	}

	// A passphrase set later encrypts plain keys in place.
	w := newEnv(t)
	w.open(t).Close()
	w.openWith(t, ca.Config{Passphrase: "later"}).Close()
	if data, _ := os.ReadFile(filepath.Join(w.dir, "root.key")); !bytes.HasPrefix(data, []byte("age-encryption.org/v1")) {
		t.Fatal("plain root key not encrypted when a passphrase was set")
	}
	if _, err := w.try(ca.Config{Passphrase: "nope"}); cove.ErrorCode(err) != cove.Invalid {
		t.Fatalf("wrong passphrase after encrypting in place: %v", err)
	}
}

// TestReplicas runs two CAs on one store and key directory, as two
// replicas would: a revocation on one takes effect on the other within
// five seconds.
func TestReplicas(t *testing.T) {
	v := newEnv(t)
	a := v.open(t)
	b := v.openWith(t, ca.Config{CacheTTL: 2 * time.Second})
	if a.RootFingerprint() != b.RootFingerprint() {
		t.Fatal("replicas have different roots")
	}
	iss, err := a.IssueNode(v.ctx, nodeID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := parse(t, iss.CertPEM)
	if _, err := b.VerifyClient(v.ctx, leaf); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Revoke(v.ctx, admin, iss.Certificate.Serial, "cessation_of_operation"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		if _, err := b.VerifyClient(v.ctx, leaf); cove.ErrorCode(err) == cove.Unauthenticated {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("the other replica still accepts the certificate after 5 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The other replica serves the new CRL.
	time.Sleep(2 * time.Second)
	der, err := b.CRL(v.ctx)
	if err != nil {
		t.Fatal(err)
	}
	crl, _ := x509.ParseRevocationList(der)
	if crl == nil || len(crl.RevokedCertificateEntries) != 1 {
		t.Fatal("the other replica serves a CRL without the revocation")
	}
}

// TestTimers: the CRL is re-issued and the responder renewed by their
// timers, without any request.
func TestTimers(t *testing.T) {
	v := newEnv(t)
	svc := v.openWith(t, ca.Config{CRLTTL: 400 * time.Millisecond, ResponderTTL: 400 * time.Millisecond, CacheTTL: time.Millisecond})
	first, err := sqlstore.NewCAStore(v.db).LatestCRL(v.ctx)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := chainOf(t, svc)
	iss, err := svc.IssueNode(v.ctx, nodeID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req, err := ocsp.CreateRequest(parse(t, iss.CertPEM), inter, nil)
	if err != nil {
		t.Fatal(err)
	}
	responder := func() *x509.Certificate {
		r, err := ocsp.ParseResponse(svc.RespondOCSP(v.ctx, req), inter)
		if err != nil {
			t.Fatal(err)
		}
		return r.Certificate
	}
	before := responder()
	time.Sleep(time.Second)
	// Certificates hold whole seconds: a renewal within the same second
	// has the same NotAfter, never an earlier one.
	if after := responder(); after.SerialNumber.Cmp(before.SerialNumber) == 0 || after.NotAfter.Before(before.NotAfter) {
		t.Fatal("the OCSP responder was not renewed")
	}
	latest, err := sqlstore.NewCAStore(v.db).LatestCRL(v.ctx)
	if err != nil || latest.Number < first.Number+2 {
		t.Fatalf("CRL number %d after a second of 400 ms CRLs, first %d: %v", latest.Number, first.Number, err)
	}
	der, err := svc.CRL(v.ctx)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil || crl.Number.Int64() < latest.Number {
		t.Fatalf("served CRL %v is older than the latest, %d: %v", crl.Number, latest.Number, err)
	}
}
