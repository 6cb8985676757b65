package httpapi_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/crypto/ocsp"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app/apptest"
)

func csrPEM(t *testing.T, key crypto.Signer, cn string, dns ...string) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: dns}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestCARoutes runs the CA routes in order, each answer checked against
// the OpenAPI document; later requests use what earlier ones returned.
func TestCARoutes(t *testing.T) {
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			v := newEnv(t, e)
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			weak, err := rsa.GenerateKey(rand.Reader, 1024)
			if err != nil {
				t.Fatal(err)
			}
			var own, server string
			serialOf := func(into *string) func([]byte) {
				return func(b []byte) {
					var out struct {
						Certificate struct{ Serial string } `json:"certificate"`
						KeyPEM      string                  `json:"key_pem"`
					}
					if err := json.Unmarshal(b, &out); err != nil || out.Certificate.Serial == "" {
						t.Fatalf("issue answered %s", b)
					}
					*into = out.Certificate.Serial
				}
			}
			steps := []step{
				{name: "chain needs no login", method: "GET", pattern: "/api/v1/ca/chain", status: 200,
					then: func(b []byte) {
						if !strings.Contains(string(b), "BEGIN CERTIFICATE") || !strings.Contains(string(b), v.m.URL+"/ocsp") {
							t.Fatalf("chain %s", b)
						}
					}},
				{name: "list needs a login", method: "GET", pattern: "/api/v1/ca/certificates", status: 401, code: cove.Unauthenticated},
				{name: "issue own", method: "POST", pattern: "/api/v1/ca/certificates", who: "owner", body: func() string { return `{"ttl":"24h"}` }, status: 201, then: serialOf(&own)},
				{name: "CSR for another's email", method: "POST", pattern: "/api/v1/ca/certificates", who: "owner",
					body: func() string { return `{"csr":` + jsonString(csrPEM(t, key, "viewer@example.com")) + `}` }, status: 403, code: cove.Forbidden},
				{name: "CSR with a DNS name", method: "POST", pattern: "/api/v1/ca/certificates", who: "owner",
					body: func() string {
						return `{"csr":` + jsonString(csrPEM(t, key, "owner@example.com", "owner.example.com")) + `}`
					}, status: 403, code: cove.Forbidden},
				{name: "malformed CSR", method: "POST", pattern: "/api/v1/ca/certificates", who: "owner",
					body: func() string {
						return `{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"}`
					}, status: 400, code: cove.Invalid},
				{name: "RSA-1024 CSR", method: "POST", pattern: "/api/v1/ca/certificates", who: "owner",
					body: func() string { return `{"csr":` + jsonString(csrPEM(t, weak, "owner@example.com")) + `}` }, status: 400, code: cove.Invalid},
				{name: "bad ttl", method: "POST", pattern: "/api/v1/ca/certificates", who: "owner", body: func() string { return `{"ttl":"soon"}` }, status: 400, code: cove.Invalid},
				{name: "server by a user", method: "POST", pattern: "/api/v1/ca/certificates", who: "owner",
					body: func() string { return `{"kind":"server","common_name":"x.io","dns_names":["x.io"]}` }, status: 403, code: cove.Forbidden},
				{name: "server by an admin", method: "POST", pattern: "/api/v1/ca/certificates", who: "admin",
					body: func() string {
						return `{"kind":"server","csr":` + jsonString(csrPEM(t, key, "api.example.com", "api.example.com")) + `}`
					}, status: 201, then: serialOf(&server)},
				{name: "a user lists their own", method: "GET", pattern: "/api/v1/ca/certificates", who: "owner", status: 200,
					then: func(b []byte) {
						if !strings.Contains(string(b), own) || strings.Contains(string(b), server) {
							t.Fatalf("owner's list %s", b)
						}
					}},
				{name: "bad status", method: "GET", pattern: "/api/v1/ca/certificates", who: "admin", path: func() string { return "/api/v1/ca/certificates?status=lost" }, status: 400, code: cove.Invalid},
				{name: "get own", method: "GET", pattern: "/api/v1/ca/certificates/{serial}", who: "owner", path: func() string { return "/api/v1/ca/certificates/" + own }, status: 200},
				{name: "outsider gets", method: "GET", pattern: "/api/v1/ca/certificates/{serial}", who: "outsider", path: func() string { return "/api/v1/ca/certificates/" + own }, status: 404, code: cove.NotFound},
				{name: "renew own", method: "POST", pattern: "/api/v1/ca/certificates/{serial}/renew", who: "owner", path: func() string { return "/api/v1/ca/certificates/" + own + "/renew" },
					body: func() string { return `{}` }, status: 201},
				{name: "outsider revokes", method: "POST", pattern: "/api/v1/ca/certificates/{serial}/revoke", who: "outsider", path: func() string { return "/api/v1/ca/certificates/" + own + "/revoke" },
					body: func() string { return `{}` }, status: 404, code: cove.NotFound},
				{name: "bad reason", method: "POST", pattern: "/api/v1/ca/certificates/{serial}/revoke", who: "admin", path: func() string { return "/api/v1/ca/certificates/" + server + "/revoke" },
					body: func() string { return `{"reason":"bored"}` }, status: 400, code: cove.Invalid},
				{name: "revoke", method: "POST", pattern: "/api/v1/ca/certificates/{serial}/revoke", who: "admin", path: func() string { return "/api/v1/ca/certificates/" + server + "/revoke" },
					body: func() string { return `{"reason":"key_compromise"}` }, status: 200},
				{name: "revoke again", method: "POST", pattern: "/api/v1/ca/certificates/{serial}/revoke", who: "admin", path: func() string { return "/api/v1/ca/certificates/" + server + "/revoke" },
					body: func() string { return `{}` }, status: 409, code: cove.Conflict},
				{name: "list revoked", method: "GET", pattern: "/api/v1/ca/certificates", who: "admin", path: func() string { return "/api/v1/ca/certificates?status=revoked&kind=server" }, status: 200,
					then: func(b []byte) {
						if !strings.Contains(string(b), server) || strings.Contains(string(b), own) {
							t.Fatalf("revoked list %s", b)
						}
					}},
			}
			v.runSteps(t, steps)
		})
	}
}

// TestOCSPAndCRLRoutes asks the public OCSP and CRL routes over HTTP, with
// good, unknown and malformed requests.
func TestOCSPAndCRLRoutes(t *testing.T) {
	v := newEnv(t, apptest.Engines()[0])
	iss, err := v.m.CA.IssueServer(t.Context(), []string{"ocsp.test"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(iss.CertPEM)
	leaf, _ := x509.ParseCertificate(b.Bytes)
	b, _ = pem.Decode(iss.ChainPEM)
	inter, _ := x509.ParseCertificate(b.Bytes)
	good, err := ocsp.CreateRequest(leaf, inter, nil)
	if err != nil {
		t.Fatal(err)
	}

	post := func(body []byte) (*http.Response, []byte) {
		t.Helper()
		res, err := http.Post(v.m.URL+"/ocsp", "application/ocsp-request", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		out, _ := io.ReadAll(res.Body)
		return res, out
	}
	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		res, err := http.Get(v.m.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		out, _ := io.ReadAll(res.Body)
		return res, out
	}
	status := func(t *testing.T, res *http.Response, der []byte) int {
		t.Helper()
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/ocsp-response" {
			t.Fatalf("answer %d %s", res.StatusCode, res.Header.Get("Content-Type"))
		}
		r, err := ocsp.ParseResponse(der, inter)
		if err != nil {
			t.Fatalf("parse: %v (%x)", err, der)
		}
		return r.Status
	}

	t.Run("POST good", func(t *testing.T) {
		if res, der := post(good); status(t, res, der) != ocsp.Good {
			t.Fatal("not good")
		}
	})
	t.Run("GET good", func(t *testing.T) {
		if res, der := get("/ocsp/" + url.PathEscape(base64.StdEncoding.EncodeToString(good))); status(t, res, der) != ocsp.Good {
			t.Fatal("not good")
		}
	})
	t.Run("GET with a slash in the base64", func(t *testing.T) {
		// Serials are tried until the encoding holds a '/', sent as %2F.
		for n := int64(1); n < 5000; n++ {
			req := &ocsp.Request{HashAlgorithm: crypto.SHA1, SerialNumber: big.NewInt(n)}
			probe, _ := ocsp.CreateRequest(leaf, inter, nil)
			parsed, _ := ocsp.ParseRequest(probe)
			req.IssuerNameHash, req.IssuerKeyHash = parsed.IssuerNameHash, parsed.IssuerKeyHash
			der, _ := req.Marshal()
			enc := base64.StdEncoding.EncodeToString(der)
			if !strings.Contains(enc, "/") {
				continue
			}
			if res, der := get("/ocsp/" + url.PathEscape(enc)); status(t, res, der) != ocsp.Unknown {
				t.Fatalf("unknown serial %d not answered unknown", n)
			}
			return
		}
		t.Fatal("no serial encoded with a '/'")
	})
	for _, c := range []struct {
		name string
		res  func() (*http.Response, []byte)
	}{
		{"POST garbage", func() (*http.Response, []byte) { return post([]byte("not a request")) }},
		{"POST truncated", func() (*http.Response, []byte) { return post(good[:len(good)-7]) }},
		{"POST too large", func() (*http.Response, []byte) { return post(bytes.Repeat([]byte{0x30}, 20000)) }},
		{"GET not base64", func() (*http.Response, []byte) { return get("/ocsp/not*base64!") }},
		{"GET truncated", func() (*http.Response, []byte) {
			return get("/ocsp/" + url.PathEscape(base64.StdEncoding.EncodeToString(good[:20])))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, der := c.res()
			if res.StatusCode != 200 || !bytes.Equal(der, ocsp.MalformedRequestErrorResponse) {
				t.Fatalf("answer %d %x, want the malformedRequest response", res.StatusCode, der)
			}
		})
	}

	res, der := get("/crl")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("CRL answer %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil || crl.CheckSignatureFrom(inter) != nil || crl.Number.Sign() <= 0 {
		t.Fatalf("CRL: %v", err)
	}
}
