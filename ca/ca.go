// Package ca is Cove's certificate authority: it issues, renews and revokes
// the X.509 certificates that nodes, agents, users and the server itself
// authenticate with, answers OCSP (RFC 6960) and publishes a CRL.
//
// The hierarchy is a root (ECDSA P-256, 10 years) that signs only an
// intermediate (5 years); the intermediate signs every leaf, the CRL and a
// short-lived delegated OCSP responder certificate. Keys live in
// <data_dir>/ca, optionally encrypted with a passphrase (age, scrypt).
// Certificates and CRLs live in the Store, so replicas that share the
// database and the key directory answer alike.
//
// Who may do what: platform admins issue any kind with any names and manage
// every certificate; anyone else may issue only user certificates for their
// own email and manage only their own. Node certificates come from
// enrollment (IssueNode), which has checked the node's token already.
package ca

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
)

// Kind is what a certificate is for.
type Kind string

// The kinds of certificates.
const (
	Node   Kind = "node"   // a compute node, client auth over mTLS
	Agent  Kind = "agent"  // an agent inside a sandbox, client auth
	User   Kind = "user"   // a person, client auth; CN is their email
	Server Kind = "server" // a control-plane listener, server auth
)

// Kinds lists every kind.
var Kinds = []Kind{Node, Agent, User, Server}

// Validate checks that k is a kind.
func (k Kind) Validate() error {
	if !slices.Contains(Kinds, k) {
		return invalid("kind", "kind %q is not one of node, agent, user, server", k)
	}
	return nil
}

// Status is where a certificate is in its life, derived from its times.
type Status string

// The statuses.
const (
	Valid   Status = "valid"
	Revoked Status = "revoked"
	Expired Status = "expired"
)

// Certificate is an issued certificate and what Cove knows about it.
type Certificate struct {
	// ID orders certificates by issue time for lists; Serial names them.
	ID          string   `json:"id"`
	Serial      string   `json:"serial" jsonschema:"description=serial number in lowercase hex"`
	Kind        Kind     `json:"kind"`
	CommonName  string   `json:"common_name"`
	DNSNames    []string `json:"dns_names"`
	IPAddresses []string `json:"ip_addresses"`
	// Owner is who the certificate belongs to: a user ID for user
	// certificates, the node ID for node certificates.
	Owner            string     `json:"owner"`
	Fingerprint      string     `json:"fingerprint" jsonschema:"description=sha256: and the lowercase hex SHA-256 of the DER"`
	NotBefore        time.Time  `json:"not_before"`
	NotAfter         time.Time  `json:"not_after"`
	RevokedAt        *time.Time `json:"revoked_at,omitempty"`
	RevocationReason string     `json:"revocation_reason,omitempty"`
	// RenewedFrom is the serial of the certificate this one renewed.
	RenewedFrom string    `json:"renewed_from,omitempty"`
	CreatedBy   string    `json:"created_by,omitempty"` // user ID; empty for enrollment and the server
	CreatedAt   time.Time `json:"created_at"`
	PEM         string    `json:"pem"`
	// Status is derived when the certificate is read.
	Status Status `json:"status"`
}

// status derives the status at now.
func (c *Certificate) status(now time.Time) Status {
	switch {
	case c.RevokedAt != nil:
		return Revoked
	case !now.Before(c.NotAfter):
		return Expired
	}
	return Valid
}

// Issued is a new certificate with its PEM encodings. KeyPEM is empty when
// the certificate was issued for a CSR; ChainPEM is the intermediate then
// the root.
type Issued struct {
	Certificate *Certificate
	CertPEM     []byte
	KeyPEM      []byte
	ChainPEM    []byte
}

// IssueRequest asks for a certificate. Names come from the request, or,
// when it names none, from the CSR. Without a CSR the server generates an
// ECDSA P-256 key and returns it once.
type IssueRequest struct {
	Kind        Kind
	CommonName  string
	DNSNames    []string
	IPAddresses []string
	// CSRPEM is a PEM "CERTIFICATE REQUEST"; empty for a generated key.
	CSRPEM []byte
	// TTL is the lifetime, at most the kind's (ca.*_cert_ttl); 0 means
	// the kind's.
	TTL time.Duration
	// Owner is who the certificate is for (admins only); empty means the
	// caller, or for a node certificate its common name.
	Owner string
}

// Filter selects certificates, ordered by ID (issue time).
type Filter struct {
	Kind   Kind
	Owner  string
	Status Status
	// Now is when Status is judged; the service sets it.
	Now  time.Time
	Page cove.Page
}

// CRL is one issued certificate revocation list.
type CRL struct {
	Number     int64
	ThisUpdate time.Time
	NextUpdate time.Time
	DER        []byte
}

// RevokedEntry is one line of a CRL.
type RevokedEntry struct {
	Serial    string
	RevokedAt time.Time
	Reason    string
}

// Store persists certificates and CRLs. Methods return not_found for a
// missing row and conflict for a duplicate.
type Store interface {
	// Atomic runs fn in one transaction; fn's Store sees the transaction.
	Atomic(ctx context.Context, fn func(Store) error) error

	CreateCertificate(ctx context.Context, c *Certificate) error
	FindCertificateBySerial(ctx context.Context, serial string) (*Certificate, error)
	// FindCertificates returns the certificates matching f, by ID.
	FindCertificates(ctx context.Context, f Filter) ([]*Certificate, error)
	// RevokeCertificate marks an unrevoked certificate revoked; conflict
	// when it already is.
	RevokeCertificate(ctx context.Context, serial string, at time.Time, reason string) error
	// FindRevokedCertificates returns the revoked certificates that have
	// not expired at now: the content of a CRL.
	FindRevokedCertificates(ctx context.Context, now time.Time) ([]RevokedEntry, error)

	// CreateCRL stores a CRL; conflict when its number is taken.
	CreateCRL(ctx context.Context, c *CRL) error
	// LatestCRL returns the CRL with the highest number; not_found when
	// none was issued.
	LatestCRL(ctx context.Context) (*CRL, error)

	RecordAudit(ctx context.Context, e audit.Entry) error
}

// Revocations hears about revocations after they commit, for instance to
// cut a node off and fail its runs.
type Revocations interface {
	CertificateRevoked(ctx context.Context, c *Certificate)
}

// Reasons maps the revocation reasons a caller may give (RFC 5280 5.3.1) to
// their codes. certificateHold is left out: Cove never un-revokes.
var Reasons = map[string]int{
	"unspecified":            ocsp.Unspecified,
	"key_compromise":         ocsp.KeyCompromise,
	"ca_compromise":          ocsp.CACompromise,
	"affiliation_changed":    ocsp.AffiliationChanged,
	"superseded":             ocsp.Superseded,
	"cessation_of_operation": ocsp.CessationOfOperation,
	"privilege_withdrawn":    ocsp.PrivilegeWithdrawn,
}

// reasonNames lists the reasons for messages, in code order.
const reasonNames = "unspecified, key_compromise, ca_compromise, affiliation_changed, superseded, cessation_of_operation, privilege_withdrawn"

// Lifetimes and limits.
const (
	DefaultNodeTTL      = 30 * 24 * time.Hour
	DefaultUserTTL      = 90 * 24 * time.Hour
	DefaultServerTTL    = 90 * 24 * time.Hour
	DefaultAgentTTL     = 24 * time.Hour
	DefaultResponderTTL = 48 * time.Hour
	DefaultOCSPTTL      = time.Hour
	DefaultCRLTTL       = 24 * time.Hour
	// DefaultCacheTTL bounds how long this process trusts what it read
	// about a certificate; a revocation made by another replica takes
	// effect here within it.
	DefaultCacheTTL = 4 * time.Second
	MinTTL          = 5 * time.Minute
	rootTTL         = 10 * 365 * 24 * time.Hour
	intermediateTTL = 5 * 365 * 24 * time.Hour
	maxNames        = 100
	maxNameLen      = 253
)

func invalid(field, format string, args ...any) *cove.Error {
	e := cove.Errorf(cove.Invalid, format, args...)
	return e.WithDetails(cove.Detail{Field: field, Message: e.Message})
}

// NormalizeSerial accepts a serial in hex, in any case, with or without
// colons and leading zeros, and returns it as Certificate.Serial has it.
func NormalizeSerial(s string) (string, error) {
	s = strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	s = strings.TrimLeft(s, "0")
	if s == "" || len(s) > 40 {
		return "", invalid("serial", "a serial number is 1 to 40 hex digits")
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", invalid("serial", "a serial number is 1 to 40 hex digits")
		}
	}
	return s, nil
}

// serialOf returns the serial of an X.509 certificate as Cove writes it.
func serialOf(c *x509.Certificate) string { return c.SerialNumber.Text(16) }
