// Package tlstrust builds the TLS client configuration with which the CLI,
// the SDK and compute nodes trust a Cove control plane: the system's roots,
// plus a CA file (Cove's own CA chain, from `cove ca chain`), or a pinned
// certificate fingerprint for a first contact when no file is at hand.
package tlstrust

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"strings"

	"github.com/covecompute/cove"
)

// Fingerprint returns "sha256:" and the lowercase hex SHA-256 of a
// certificate's DER, the form `cove serve` prints and --ca-fingerprint
// takes.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// NormalizeFingerprint accepts a fingerprint with or without the sha256:
// prefix, in either case, with or without colons between bytes, and
// returns it in Fingerprint's form. Invalid for anything else.
func NormalizeFingerprint(s string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(s))
	h = strings.TrimPrefix(h, "sha256:")
	h = strings.ReplaceAll(h, ":", "")
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return "", cove.Errorf(cove.Invalid, "%q is not a SHA-256 certificate fingerprint (sha256: and 64 hex digits, as cove serve prints it)", s)
	}
	return "sha256:" + h, nil
}

// ParsePEM returns the certificates in PEM data. Invalid when there are
// none or one cannot be parsed.
func ParsePEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, &cove.Error{Code: cove.Invalid, Message: "a certificate in the PEM data cannot be parsed", Err: err}
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, cove.Errorf(cove.Invalid, "no PEM certificate found")
	}
	return certs, nil
}

// Config returns a client configuration that trusts the system's roots,
// the certificates in caPEM (if any), and, when fingerprint is set, a
// server whose chain contains the certificate with that fingerprint and
// verifies up to it for the server's name. Invalid for unreadable PEM or
// a malformed fingerprint.
func Config(caPEM []byte, fingerprint string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(caPEM) > 0 {
		certs, err := ParsePEM(caPEM)
		if err != nil {
			return nil, err
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
		cfg.RootCAs = pool
	}
	if fingerprint == "" {
		return cfg, nil
	}
	want, err := NormalizeFingerprint(fingerprint)
	if err != nil {
		return nil, err
	}
	// The pin replaces the usual verification, which would fail on a
	// private CA; VerifyConnection does the same checks against the
	// pinned certificate as the root.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyPinned(cs, want)
	}
	return cfg, nil
}

// FileConfig is Config with the CA certificates read from caFile ("" for
// none).
func FileConfig(caFile, fingerprint string) (*tls.Config, error) {
	var caPEM []byte
	if caFile != "" {
		var err error
		if caPEM, err = os.ReadFile(caFile); err != nil {
			return nil, &cove.Error{Code: cove.Invalid, Message: "cannot read the CA file " + caFile, Err: err}
		}
	}
	return Config(caPEM, fingerprint)
}

func verifyPinned(cs tls.ConnectionState, want string) error {
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return cove.Errorf(cove.Unauthenticated, "the server presented no certificate")
	}
	var pinned *x509.Certificate
	for _, c := range certs {
		if Fingerprint(c) == want {
			pinned = c
			break
		}
	}
	if pinned == nil {
		return cove.Errorf(cove.Unauthenticated,
			"the server's certificate chain does not contain the pinned certificate %s: check the fingerprint `cove serve` printed, or use --ca-file", want)
	}
	roots := x509.NewCertPool()
	roots.AddCert(pinned)
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: cs.ServerName, Roots: roots, Intermediates: inter}); err != nil {
		return &cove.Error{Code: cove.Unauthenticated, Message: "the server's certificate does not verify against the pinned certificate: " + err.Error(), Err: err}
	}
	return nil
}
