package ca

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net"
	"slices"
	"strings"
	"unicode"

	"github.com/covecompute/cove"
)

// sameNames checks that a renewal's CSR asks for no names but old's.
func sameNames(csr *x509.CertificateRequest, old *Certificate) *cove.Error {
	if cn := csr.Subject.CommonName; cn != "" && cn != old.CommonName {
		return cove.Errorf(cove.Forbidden, "the CSR asks for %q, but the certificate being renewed is %q", cn, old.CommonName)
	}
	for _, d := range csr.DNSNames {
		if !slices.Contains(old.DNSNames, strings.ToLower(d)) {
			return cove.Errorf(cove.Forbidden, "the CSR asks for DNS name %q, which the certificate being renewed does not have", d)
		}
	}
	for _, ip := range csr.IPAddresses {
		if !slices.Contains(old.IPAddresses, ip.String()) {
			return cove.Errorf(cove.Forbidden, "the CSR asks for IP address %s, which the certificate being renewed does not have", ip)
		}
	}
	for _, em := range csr.EmailAddresses {
		if old.Kind != User || em != old.CommonName {
			return cove.Errorf(cove.Forbidden, "the CSR asks for email %q, which the certificate being renewed does not have", em)
		}
	}
	if len(csr.URIs) > 0 {
		return cove.Errorf(cove.Forbidden, "the CSR asks for URI names; Cove issues none")
	}
	return nil
}

// names validates and sets the DNS names and IP addresses of sp.
func (s *Service) names(sp spec, dns, ips []string) (spec, error) {
	if len(dns)+len(ips) > maxNames {
		return sp, invalid("dns_names", "a certificate has at most %d names", maxNames)
	}
	if err := validCommonName(sp.cn); err != nil {
		return sp, err
	}
	sp.dns = nil
	for _, d := range dns {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if !validDNSName(d, sp.kind == Server) {
			return sp, invalid("dns_names", "%q is not a DNS name", d)
		}
		if !slices.Contains(sp.dns, d) {
			sp.dns = append(sp.dns, d)
		}
	}
	sp.ips = nil
	for _, v := range ips {
		ip := net.ParseIP(v)
		if ip == nil {
			return sp, invalid("ip_addresses", "%q is not an IP address", v)
		}
		if ip4 := ip.To4(); ip4 != nil {
			ip = ip4
		}
		if !slices.ContainsFunc(sp.ips, ip.Equal) {
			sp.ips = append(sp.ips, ip)
		}
	}
	if sp.kind == Server && len(sp.dns)+len(sp.ips) == 0 {
		return sp, invalid("dns_names", "a server certificate needs a DNS name or an IP address")
	}
	return sp, nil
}

func validCommonName(cn string) error {
	if cn == "" || len(cn) > 64 {
		return invalid("common_name", "the common name must be 1 to 64 characters")
	}
	for _, r := range cn {
		if unicode.IsControl(r) {
			return invalid("common_name", "the common name must not contain control characters")
		}
	}
	return nil
}

// validDNSName checks a lowercase host name; wildcard allows a leading
// "*." label.
func validDNSName(d string, wildcard bool) bool {
	if wildcard {
		d = strings.TrimPrefix(d, "*.")
	}
	if d == "" || len(d) > maxNameLen {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := range len(label) {
			if c := label[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// ParseCSR decodes a PEM certificate request and checks its signature and
// key: RSA of at least 2048 bits, ECDSA on P-256 or P-384, or Ed25519.
func ParseCSR(pemBytes []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") {
		return nil, invalid("csr", "the CSR is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, invalid("csr", "the CSR is malformed: it does not parse as PKCS #10")
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, invalid("csr", "the CSR's signature does not verify with its own key")
	}
	switch k := csr.PublicKey.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, invalid("csr", "the CSR's RSA key has %d bits; use at least 2048, or ECDSA P-256", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, invalid("csr", "the CSR's ECDSA key is on %s; use P-256 or P-384", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return nil, invalid("csr", "the CSR's key type is not supported; use ECDSA P-256 or P-384, RSA 2048+ or Ed25519")
	}
	return csr, nil
}
