package sdk

import (
	"context"
	"io"
	"net/http"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/ca"
	"github.com/covecompute/cove/httpapi"
)

// maxCRL bounds the CRL download.
const maxCRL = 64 << 20

// CAChain returns the CA chain (intermediate then root, PEM), the root's
// fingerprint and the OCSP and CRL URLs; it needs no login.
func (c *Client) CAChain(ctx context.Context) (*ca.Chain, error) {
	var out ca.Chain
	if err := c.callPublic(ctx, http.MethodGet, path("ca", "chain"), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CertificateFilter narrows ListCertificates.
type CertificateFilter struct {
	Kind   ca.Kind
	Owner  string    // platform admins only
	Status ca.Status // valid, revoked or expired
}

// ListCertificates returns a page of the certificates the caller may see
// (all for platform admins, their own for others) and the next cursor.
func (c *Client) ListCertificates(ctx context.Context, f CertificateFilter, opts ListOptions) ([]*ca.Certificate, string, error) {
	q := opts.query()
	if f.Kind != "" {
		q.Set("kind", string(f.Kind))
	}
	if f.Owner != "" {
		q.Set("owner", f.Owner)
	}
	if f.Status != "" {
		q.Set("status", string(f.Status))
	}
	return page[*ca.Certificate](ctx, c, path("ca", "certificates"), q)
}

// GetCertificate returns one certificate by serial; one the caller may
// not see is NotFound.
func (c *Client) GetCertificate(ctx context.Context, serial string) (*ca.Certificate, error) {
	return one[ca.Certificate](ctx, c, http.MethodGet, path("ca", "certificates", serial), nil)
}

// IssueCertificate issues a certificate. Non-admins may issue only user
// certificates for their own email (Forbidden otherwise); a malformed or
// weak CSR is Invalid. KeyPEM is set only when the server made the key.
func (c *Client) IssueCertificate(ctx context.Context, in httpapi.IssueCertificateInput) (*ca.Issued, error) {
	out, err := one[httpapi.IssuedCertificate](ctx, c, http.MethodPost, path("ca", "certificates"), in)
	return fromIssued(out, err)
}

// RenewCertificate issues a new certificate with the same kind, names and
// owner as serial's, for csrPEM's key or, when it is empty, a generated
// one. A revoked certificate is Conflict.
func (c *Client) RenewCertificate(ctx context.Context, serial string, csrPEM []byte) (*ca.Issued, error) {
	out, err := one[httpapi.IssuedCertificate](ctx, c, http.MethodPost, path("ca", "certificates", serial, "renew"), httpapi.RenewCertificateInput{CSR: string(csrPEM)})
	return fromIssued(out, err)
}

// RevokeCertificate revokes a certificate with an RFC 5280 reason such as
// key_compromise ("" for unspecified); revoking twice is Conflict.
func (c *Client) RevokeCertificate(ctx context.Context, serial, reason string) (*ca.Certificate, error) {
	return one[ca.Certificate](ctx, c, http.MethodPost, path("ca", "certificates", serial, "revoke"), httpapi.RevokeCertificateInput{Reason: reason})
}

// CRL downloads the current CRL, DER encoded; it needs no login.
func (c *Client) CRL(ctx context.Context) ([]byte, error) {
	resp, err := c.roundTrip(ctx, request{method: http.MethodGet, path: "/crl"}, nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, c.decodeError(resp)
	}
	der, err := io.ReadAll(io.LimitReader(resp.Body, maxCRL))
	if err != nil {
		return nil, &cove.Error{Code: cove.Unavailable, Message: "the CRL download broke off", Err: err}
	}
	return der, nil
}

func fromIssued(out *httpapi.IssuedCertificate, err error) (*ca.Issued, error) {
	if err != nil {
		return nil, err
	}
	return &ca.Issued{Certificate: out.Certificate, CertPEM: []byte(out.CertPEM), KeyPEM: []byte(out.KeyPEM), ChainPEM: []byte(out.ChainPEM)}, nil
}
