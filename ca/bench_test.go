package ca_test

import (
	"crypto/x509"
	"testing"

	"golang.org/x/crypto/ocsp"
)

// BenchmarkVerifyClient is the cost of one mTLS check: chain verification
// plus the cached revocation lookup.
func BenchmarkVerifyClient(b *testing.B) {
	v := newEnv(b)
	svc := v.open(b)
	iss, err := svc.IssueNode(v.ctx, nodeID(), nil)
	if err != nil {
		b.Fatal(err)
	}
	leaf := parse(b, iss.CertPEM)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := svc.VerifyClient(v.ctx, leaf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRespondOCSP answers one request: with a nonce it is signed
// every time; without, the cached answer is reused.
func BenchmarkRespondOCSP(b *testing.B) {
	v := newEnv(b)
	svc := v.open(b)
	inter, _ := chainOf(b, svc)
	iss, err := svc.IssueNode(v.ctx, nodeID(), nil)
	if err != nil {
		b.Fatal(err)
	}
	req, err := ocsp.CreateRequest(parse(b, iss.CertPEM), inter, nil)
	if err != nil {
		b.Fatal(err)
	}
	for name, r := range map[string][]byte{"nonce": withRequestNonce(b, req, []byte("0123456789abcdef")), "cached": req} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if out := svc.RespondOCSP(v.ctx, r); len(out) < 100 {
					b.Fatalf("answer %x", out)
				}
			}
		})
	}
}

// BenchmarkIssue issues a node certificate for a CSR, stored and audited
// in SQLite.
func BenchmarkIssue(b *testing.B) {
	v := newEnv(b)
	svc := v.open(b)
	req := csr(b, p256(b), &x509.CertificateRequest{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := svc.IssueNode(v.ctx, nodeID(), req); err != nil {
			b.Fatal(err)
		}
	}
}
