package ca_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/ca"
)

// chainOf returns the intermediate and root of svc.
func chainOf(t testing.TB, svc *ca.Service) (inter, root *x509.Certificate) {
	t.Helper()
	b, rest := pem.Decode(svc.ChainPEM())
	inter, _ = x509.ParseCertificate(b.Bytes)
	b, _ = pem.Decode(rest)
	root, _ = x509.ParseCertificate(b.Bytes)
	return inter, root
}

// withRequestNonce adds a nonce extension to a request made by
// ocsp.CreateRequest, as openssl sends it.
func withRequestNonce(t testing.TB, req []byte, nonce []byte) []byte {
	t.Helper()
	var raw struct {
		TBS struct {
			Version      int `asn1:"explicit,tag:0,default:0,optional"`
			RequestList  []asn1.RawValue
			RequestExtns []struct {
				ID    asn1.ObjectIdentifier
				Value []byte
			} `asn1:"explicit,tag:2,optional"`
		}
	}
	if _, err := asn1.Unmarshal(req, &raw); err != nil {
		t.Fatal(err)
	}
	value, _ := asn1.Marshal(nonce)
	raw.TBS.RequestExtns = append(raw.TBS.RequestExtns, struct {
		ID    asn1.ObjectIdentifier
		Value []byte
	}{asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}, value})
	out, err := asn1.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOCSP(t *testing.T) {
	v := newEnv(t)
	svc := v.open(t)
	inter, _ := chainOf(t, svc)
	iss, err := svc.IssueNode(v.ctx, nodeID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := parse(t, iss.CertPEM)

	ask := func(t *testing.T, cert *x509.Certificate, opts *ocsp.RequestOptions, nonce []byte) (*ocsp.Response, []byte) {
		t.Helper()
		req, err := ocsp.CreateRequest(cert, inter, opts)
		if err != nil {
			t.Fatal(err)
		}
		if nonce != nil {
			req = withRequestNonce(t, req, nonce)
		}
		der := svc.RespondOCSP(v.ctx, req)
		resp, err := ocsp.ParseResponseForCert(der, cert, inter)
		if err != nil {
			t.Fatalf("parse OCSP answer: %v", err)
		}
		return resp, der
	}

	t.Run("good, with the nonce echoed", func(t *testing.T) {
		nonce := []byte("0123456789abcdef")
		resp, der := ask(t, leaf, nil, nonce)
		if resp.Status != ocsp.Good || resp.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			t.Fatalf("status %d", resp.Status)
		}
		if resp.ThisUpdate.IsZero() || resp.NextUpdate.Sub(resp.ThisUpdate) != ca.DefaultOCSPTTL {
			t.Fatalf("thisUpdate %v nextUpdate %v", resp.ThisUpdate, resp.NextUpdate)
		}
		// Signed by the delegated responder, which the intermediate
		// certified for OCSP signing with nocheck and a short life.
		r := resp.Certificate
		if r == nil || r.CheckSignatureFrom(inter) != nil || len(r.ExtKeyUsage) != 1 || r.ExtKeyUsage[0] != x509.ExtKeyUsageOCSPSigning {
			t.Fatalf("responder certificate %+v", r)
		}
		if r.NotAfter.Sub(r.NotBefore) > ca.DefaultResponderTTL+2*time.Minute {
			t.Fatalf("responder lives %s", r.NotAfter.Sub(r.NotBefore))
		}
		nocheck := false
		for _, e := range r.Extensions {
			nocheck = nocheck || e.Id.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5})
		}
		if !nocheck {
			t.Fatal("responder certificate lacks id-pkix-ocsp-nocheck")
		}
		want, _ := asn1.Marshal(nonce)
		if got := ca.ResponseNonce(der); !bytes.Equal(got, want) {
			t.Fatalf("nonce %x, want %x", got, want)
		}
	})
	t.Run("SHA-256 certificate ID", func(t *testing.T) {
		if resp, _ := ask(t, leaf, &ocsp.RequestOptions{Hash: crypto.SHA256}, nil); resp.Status != ocsp.Good {
			t.Fatalf("status %d", resp.Status)
		}
	})
	t.Run("unknown serial", func(t *testing.T) {
		fake := *leaf
		fake.SerialNumber = big.NewInt(424242)
		if resp, _ := ask(t, &fake, nil, nil); resp.Status != ocsp.Unknown {
			t.Fatalf("status %d, want unknown", resp.Status)
		}
	})
	t.Run("cached, then revoked at once", func(t *testing.T) {
		_, a := ask(t, leaf, nil, nil)
		_, b := ask(t, leaf, nil, nil)
		if !bytes.Equal(a, b) {
			t.Fatal("an answer without a nonce was signed again instead of reused")
		}
		if _, err := svc.Revoke(v.ctx, admin, iss.Certificate.Serial, "superseded"); err != nil {
			t.Fatal(err)
		}
		resp, _ := ask(t, leaf, nil, nil)
		if resp.Status != ocsp.Revoked || resp.RevocationReason != ocsp.Superseded || resp.RevokedAt.IsZero() {
			t.Fatalf("after revocation: status %d reason %d at %v", resp.Status, resp.RevocationReason, resp.RevokedAt)
		}
	})

	good, err := ocsp.CreateRequest(leaf, inter, nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name string
		req  []byte
		want []byte
	}{
		{"empty", nil, ocsp.MalformedRequestErrorResponse},
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n"), ocsp.MalformedRequestErrorResponse},
		{"truncated", good[:len(good)/2], ocsp.MalformedRequestErrorResponse},
		{"trailing data", append(bytes.Clone(good), 0), ocsp.MalformedRequestErrorResponse},
		{"long nonce", withRequestNonce(t, good, bytes.Repeat([]byte{1}, 64)), ocsp.MalformedRequestErrorResponse},
	}
	// A request about a certificate of another issuer.
	other := newEnv(t).open(t)
	oi, _ := chainOf(t, other)
	if foreign, err := ocsp.CreateRequest(leaf, oi, nil); err == nil {
		bad = append(bad, struct {
			name string
			req  []byte
			want []byte
		}{"another issuer", foreign, ocsp.UnauthorizedErrorResponse})
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			if got := svc.RespondOCSP(v.ctx, b.req); !bytes.Equal(got, b.want) {
				t.Fatalf("answer %x, want %x", got, b.want)
			}
		})
	}
}

func TestParseOCSPRequest(t *testing.T) {
	if _, _, err := ca.ParseOCSPRequest([]byte{0x30, 0x00}); cove.ErrorCode(err) != cove.Invalid {
		t.Fatalf("empty sequence: %v", err)
	}
}

// FuzzParseOCSPRequest feeds the request parser and the responder
// arbitrary bytes: they must answer, never panic.
func FuzzParseOCSPRequest(f *testing.F) {
	svc := newEnv(f).open(f)
	inter, _ := chainOf(f, svc)
	iss, err := svc.IssueServer(f.Context(), []string{"fuzz.test"})
	if err != nil {
		f.Fatal(err)
	}
	req, _ := ocsp.CreateRequest(parse(f, iss.CertPEM), inter, nil)
	f.Add(req)
	f.Add(withRequestNonce(f, req, []byte("nonce")))
	f.Add([]byte{0x30, 0x03, 0x0a, 0x01, 0x01})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, nonce, err := ca.ParseOCSPRequest(b)
		if err == nil && (r == nil || r.SerialNumber == nil || len(nonce) > 64) {
			t.Fatalf("accepted %x as %+v", b, r)
		}
		if len(svc.RespondOCSP(t.Context(), b)) == 0 {
			t.Fatal("empty answer")
		}
	})
}
