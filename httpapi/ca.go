package httpapi

import (
	"encoding/base64"
	"io"
	"net/http"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/ca"
)

// maxOCSPRequest bounds an OCSP request; a real one is about 100 bytes.
const maxOCSPRequest = 8 << 10

// IssueCertificateInput asks for a certificate.
type IssueCertificateInput struct {
	Kind        ca.Kind  `json:"kind,omitempty" jsonschema:"enum=node,enum=agent,enum=user,enum=server,description=default user; only platform admins issue other kinds"`
	CommonName  string   `json:"common_name,omitempty" jsonschema:"description=default: the CSR's, or for a user certificate your email"`
	DNSNames    []string `json:"dns_names,omitempty"`
	IPAddresses []string `json:"ip_addresses,omitempty"`
	CSR         string   `json:"csr,omitempty" jsonschema:"description=PEM certificate request; without one the server generates an ECDSA P-256 key and returns it once"`
	TTL         string   `json:"ttl,omitempty" jsonschema:"description=lifetime as a Go duration such as 720h; at most the kind's configured lifetime, which is the default"`
	Owner       string   `json:"owner,omitempty" jsonschema:"description=user ID the certificate is for (platform admins); default you"`
}

// RenewCertificateInput renews a certificate, for a CSR's key or a new
// generated one.
type RenewCertificateInput struct {
	CSR string `json:"csr,omitempty" jsonschema:"description=PEM certificate request naming nothing but the certificate's names; without one a key is generated"`
}

// RevokeCertificateInput revokes a certificate.
type RevokeCertificateInput struct {
	Reason string `json:"reason,omitempty" jsonschema:"enum=unspecified,enum=key_compromise,enum=ca_compromise,enum=affiliation_changed,enum=superseded,enum=cessation_of_operation,enum=privilege_withdrawn,description=RFC 5280 reason; default unspecified"`
}

// IssuedCertificate is a new certificate with its PEM files. KeyPEM is
// present only when the server generated the key, and only in this answer.
type IssuedCertificate struct {
	Certificate *ca.Certificate `json:"certificate"`
	CertPEM     string          `json:"cert_pem"`
	KeyPEM      string          `json:"key_pem,omitempty"`
	ChainPEM    string          `json:"chain_pem" jsonschema:"description=the intermediate then the root"`
}

func issued(i *ca.Issued, err error) (*IssuedCertificate, error) {
	if err != nil {
		return nil, err
	}
	return &IssuedCertificate{Certificate: i.Certificate, CertPEM: string(i.CertPEM), KeyPEM: string(i.KeyPEM), ChainPEM: string(i.ChainPEM)}, nil
}

// rawBody documents a route whose body the handler reads itself;
// rawAnswer one whose answer it writes itself.
func rawBody(contentType string) opt   { return func(r *route) { r.rawIn = contentType } }
func rawAnswer(contentType string) opt { return func(r *route) { r.rawOut = contentType } }

// MountCA adds the certificate authority's routes: certificates under
// /api/v1/ca, and at the root the OCSP responder (RFC 6960, GET and POST)
// and the CRL, which TLS clients fetch from the URLs in certificates.
func (s *Server) MountCA(svc *ca.Service) {
	const tag = "ca"
	handle(s, tag, "GET /api/v1/ca/chain", "The CA chain (intermediate then root, PEM), the root's fingerprint and the OCSP and CRL URLs",
		func(c *Call, _ Empty) (*ca.Chain, error) { return svc.Chain(), nil }, public())
	handle(s, tag, "GET /api/v1/ca/certificates", "The certificates the caller may see: all for platform admins, their own for others",
		func(c *Call, _ Empty) (List[*ca.Certificate], error) {
			page, err := c.Page()
			if err != nil {
				return List[*ca.Certificate]{}, err
			}
			out, err := svc.List(c.Ctx(), c.P, ca.Filter{Kind: ca.Kind(c.Query("kind")), Owner: c.Query("owner"), Status: ca.Status(c.Query("status")), Page: page})
			return list(out, page.Limit, func(x *ca.Certificate) string { return x.ID }), err
		}, paged(), query("kind", "node, agent, user or server"), query("owner", "only this owner's (platform admins)"), query("status", "valid, revoked or expired"))
	handle(s, tag, "POST /api/v1/ca/certificates", "Issue a certificate from a CSR or with a generated key; non-admins get user certificates for their own email only",
		func(c *Call, in IssueCertificateInput) (*IssuedCertificate, error) {
			var ttl time.Duration
			if in.TTL != "" {
				var err error
				if ttl, err = time.ParseDuration(in.TTL); err != nil || ttl <= 0 {
					return nil, cove.Errorf(cove.Invalid, "ttl %q is not a duration such as 720h", in.TTL).WithDetails(cove.Detail{Field: "ttl", Message: "not a duration"})
				}
			}
			return issued(svc.Issue(c.Ctx(), c.P, ca.IssueRequest{
				Kind: in.Kind, CommonName: in.CommonName, DNSNames: in.DNSNames, IPAddresses: in.IPAddresses,
				CSRPEM: []byte(in.CSR), TTL: ttl, Owner: in.Owner,
			}))
		}, status(201))
	handle(s, tag, "GET /api/v1/ca/certificates/{serial}", "One certificate, by serial number in hex",
		func(c *Call, _ Empty) (*ca.Certificate, error) { return svc.Get(c.Ctx(), c.P, c.Path("serial")) })
	handle(s, tag, "POST /api/v1/ca/certificates/{serial}/renew", "Issue a new certificate with the same kind, names and owner, for a new key; the old one stays valid until it expires",
		func(c *Call, in RenewCertificateInput) (*IssuedCertificate, error) {
			return issued(svc.Renew(c.Ctx(), c.P, c.Path("serial"), []byte(in.CSR)))
		}, status(201))
	handle(s, tag, "POST /api/v1/ca/certificates/{serial}/revoke", "Revoke a certificate; OCSP and the CRL say so at once",
		func(c *Call, in RevokeCertificateInput) (*ca.Certificate, error) {
			return svc.Revoke(c.Ctx(), c.P, c.Path("serial"), in.Reason)
		})

	// OCSP answers every request with an OCSP response, errors included
	// (RFC 6960 2.3), never with Cove's JSON error.
	answer := func(c *Call, der []byte) (Raw, error) {
		c.W.Header().Set("Content-Type", "application/ocsp-response")
		c.W.Header().Set("Cache-Control", "no-cache")
		_, _ = c.W.Write(der)
		return Raw{}, nil
	}
	handle(s, tag, "GET /ocsp/{request}", "OCSP (RFC 6960 A.1): the DER request, base64 then URL encoded, in the path",
		func(c *Call, _ Empty) (Raw, error) {
			// The segment comes unescaped: a '/' of the base64 travels as
			// %2F, as RFC 6960 A.1 has clients URL-encode it.
			enc := c.Path("request")
			if len(enc) > maxOCSPRequest {
				return answer(c, ocsp.MalformedRequestErrorResponse)
			}
			der, err := base64.StdEncoding.DecodeString(enc)
			if err != nil {
				if der, err = base64.RawStdEncoding.DecodeString(enc); err != nil {
					return answer(c, ocsp.MalformedRequestErrorResponse)
				}
			}
			return answer(c, svc.RespondOCSP(c.Ctx(), der))
		}, public(), rawAnswer("application/ocsp-response"))
	handle(s, tag, "POST /ocsp", "OCSP (RFC 6960 A.1): the DER request as the body",
		func(c *Call, _ Empty) (Raw, error) {
			der, err := io.ReadAll(http.MaxBytesReader(c.W, c.R.Body, maxOCSPRequest))
			if err != nil {
				return answer(c, ocsp.MalformedRequestErrorResponse)
			}
			return answer(c, svc.RespondOCSP(c.Ctx(), der))
		}, public(), rawBody("application/ocsp-request"), rawAnswer("application/ocsp-response"))
	handle(s, tag, "GET /crl", "The current CRL (DER), signed by the intermediate",
		func(c *Call, _ Empty) (Raw, error) {
			der, err := svc.CRL(c.Ctx())
			if err != nil {
				return Raw{}, err
			}
			c.W.Header().Set("Content-Type", "application/pkix-crl")
			_, _ = c.W.Write(der)
			return Raw{}, nil
		}, public(), rawAnswer("application/pkix-crl"))
}
