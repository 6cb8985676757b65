package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"log/slog"
	"net"
	"net/mail"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
)

// clockSkew backdates NotBefore so that a peer whose clock runs a little
// behind accepts a certificate at once.
const clockSkew = time.Minute

// Config configures the CA. Zero durations take the defaults.
type Config struct {
	// Dir holds the keys: <data_dir>/ca.
	Dir string
	// Passphrase encrypts the keys (age, scrypt) when set.
	Passphrase string
	// BaseURL returns the URL the OCSP and CRL URLs of new certificates
	// start with, such as "https://cove.example.com"; the listener's
	// address is known only once it listens, hence a function. Empty leaves
	// the URLs out.
	BaseURL                               func() string
	NodeTTL, UserTTL, ServerTTL, AgentTTL time.Duration
	// ResponderTTL is the lifetime of the delegated OCSP responder's
	// certificate; it is renewed at half of it.
	ResponderTTL time.Duration
	// OCSPTTL is how long an OCSP answer is valid (its nextUpdate).
	OCSPTTL time.Duration
	// CRLTTL is how long a CRL is valid; it is re-issued at half of it and
	// on every revocation.
	CRLTTL time.Duration
	// CacheTTL bounds how long a certificate's status and a signed OCSP
	// answer are reused before the store is read again. Default 4 s.
	CacheTTL time.Duration
	// ScryptWorkFactor is age's scrypt log2(N) for new key files; 0 means
	// age's default (18, about a second). Tests lower it.
	ScryptWorkFactor int
	// Revocations, when set, hears about each revocation after it commits.
	Revocations Revocations
	Log         *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Service is the certificate authority. It is safe for concurrent use.
type Service struct {
	store Store
	cfg   Config
	log   *slog.Logger
	now   func() time.Time

	h             *hierarchy
	roots, inters *x509.CertPool
	chainPEM      []byte

	mu        sync.Mutex
	closed    bool
	certs     map[string]cachedCert // by serial
	answers   map[answerKey]cachedAnswer
	responder *responder
	crl       *CRL
	crlRead   time.Time // when crl was read from the store
	// crlTimer re-issues the CRL at half its life; responderTimer renews
	// the responder at half of its.
	crlTimer, responderTimer *time.Timer
	issuerHashes             map[crypto.Hash][2][]byte // name and key hash of the intermediate
	revocations              Revocations
}

type cachedCert struct {
	c  *Certificate
	at time.Time
}

// Open loads the CA from cfg.Dir, creating the root and intermediate at the
// first start, makes a delegated OCSP responder and makes sure a current
// CRL exists. A wrong passphrase is Invalid with a message that says so.
// Close stops its timers.
func Open(ctx context.Context, store Store, cfg Config) (*Service, error) {
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&cfg.NodeTTL, DefaultNodeTTL}, {&cfg.UserTTL, DefaultUserTTL}, {&cfg.ServerTTL, DefaultServerTTL}, {&cfg.AgentTTL, DefaultAgentTTL},
		{&cfg.ResponderTTL, DefaultResponderTTL}, {&cfg.OCSPTTL, DefaultOCSPTTL}, {&cfg.CRLTTL, DefaultCRLTTL}, {&cfg.CacheTTL, DefaultCacheTTL},
	} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if cfg.Dir == "" {
		return nil, cove.Errorf(cove.Invalid, "the CA needs a key directory")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	s := &Service{
		store: store, cfg: cfg, log: cfg.Log,
		now:   func() time.Time { return now().UTC().Truncate(time.Microsecond) },
		certs: map[string]cachedCert{}, answers: map[answerKey]cachedAnswer{}, revocations: cfg.Revocations,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	h, err := openHierarchy(keyFiles{dir: filepath.Clean(cfg.Dir), passphrase: cfg.Passphrase, workFactor: cfg.ScryptWorkFactor}, s.now())
	if err != nil {
		return nil, err
	}
	s.h = h
	s.roots, s.inters = x509.NewCertPool(), x509.NewCertPool()
	s.roots.AddCert(h.root)
	s.inters.AddCert(h.intermediate)
	s.chainPEM = append(pemCert(h.intermediate.Raw), pemCert(h.root.Raw)...)
	if s.issuerHashes, err = issuerHashes(h.intermediate); err != nil {
		return nil, err
	}
	if err := s.renewResponder(); err != nil {
		return nil, err
	}
	if err := s.refreshCRL(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close stops the responder and CRL timers.
func (s *Service) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, t := range []*time.Timer{s.crlTimer, s.responderTimer} {
		if t != nil {
			t.Stop()
		}
	}
}

// schedule replaces the timer *t with one that runs fn after d, unless the
// service is closed.
func (s *Service) schedule(t **time.Timer, d time.Duration, fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if *t != nil {
		(*t).Stop()
	}
	*t = time.AfterFunc(max(d, 0), fn)
}

// SetRevocations replaces Config.Revocations, for wiring that builds its
// listener after the CA.
func (s *Service) SetRevocations(r Revocations) {
	s.mu.Lock()
	s.revocations = r
	s.mu.Unlock()
}

// Roots returns a pool holding the root, for verifying Cove's certificates.
func (s *Service) Roots() *x509.CertPool { return s.roots }

// Intermediates returns a pool holding the intermediate.
func (s *Service) Intermediates() *x509.CertPool { return s.inters }

// ChainPEM returns the intermediate then the root, PEM encoded.
func (s *Service) ChainPEM() []byte { return bytes.Clone(s.chainPEM) }

// RootFingerprint returns "sha256:" and the lowercase hex SHA-256 of the
// root's DER, for pinning.
func (s *Service) RootFingerprint() string { return fingerprint(s.h.root.Raw) }

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Chain describes the CA to those who must trust it.
type Chain struct {
	PEM             string `json:"pem" jsonschema:"description=the intermediate then the root, PEM encoded"`
	RootFingerprint string `json:"root_fingerprint"`
	OCSPURL         string `json:"ocsp_url,omitempty"`
	CRLURL          string `json:"crl_url,omitempty"`
}

// Chain returns the chain and where revocation is published.
func (s *Service) Chain() *Chain {
	c := &Chain{PEM: string(s.chainPEM), RootFingerprint: s.RootFingerprint()}
	if base := s.baseURL(); base != "" {
		c.OCSPURL, c.CRLURL = base+"/ocsp", base+"/crl"
	}
	return c
}

func (s *Service) baseURL() string {
	if s.cfg.BaseURL == nil {
		return ""
	}
	return strings.TrimSuffix(s.cfg.BaseURL(), "/")
}

func (s *Service) ttlOf(k Kind) time.Duration {
	return map[Kind]time.Duration{Node: s.cfg.NodeTTL, User: s.cfg.UserTTL, Server: s.cfg.ServerTTL, Agent: s.cfg.AgentTTL}[k]
}

// spec is a certificate to sign, after every check.
type spec struct {
	kind        Kind
	cn          string
	dns         []string
	ips         []net.IP
	emails      []string
	owner       string
	ttl         time.Duration
	pub         crypto.PublicKey // nil: generate a key
	renewedFrom string
	createdBy   string
}

// issue signs sp, stores the certificate with an audit entry and returns
// it with its PEM encodings.
func (s *Service) issue(ctx context.Context, sp spec, e audit.Entry) (*Issued, error) {
	var keyPEM []byte
	if sp.pub == nil {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, cove.Wrap(err, "could not generate a key")
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, cove.Wrap(err, "could not encode a key")
		}
		sp.pub, keyPEM = key.Public(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	now := s.now()
	notAfter := now.Add(sp.ttl)
	if notAfter.After(s.h.intermediate.NotAfter) {
		notAfter = s.h.intermediate.NotAfter
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := sp.pub.(*rsa.PublicKey); ok {
		usage |= x509.KeyUsageKeyEncipherment
	}
	eku := x509.ExtKeyUsageClientAuth
	if sp.kind == Server {
		eku = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: sp.cn, Organization: []string{"Cove"}, OrganizationalUnit: []string{string(sp.kind)}},
		NotBefore: now.Add(-clockSkew), NotAfter: notAfter,
		KeyUsage: usage, ExtKeyUsage: []x509.ExtKeyUsage{eku}, BasicConstraintsValid: true,
		DNSNames: sp.dns, IPAddresses: sp.ips, EmailAddresses: sp.emails,
	}
	if base := s.baseURL(); base != "" {
		tmpl.OCSPServer = []string{base + "/ocsp"}
		tmpl.CRLDistributionPoints = []string{base + "/crl"}
	}
	der, cert, err := sign(tmpl, s.h.intermediate, sp.pub, s.h.key)
	if err != nil {
		return nil, err
	}
	certPEM := pemCert(der)
	c := &Certificate{
		ID: cove.NewID("crt"), Serial: serialOf(cert), Kind: sp.kind, CommonName: sp.cn,
		DNSNames: orEmpty(sp.dns), IPAddresses: ipStrings(sp.ips), Owner: sp.owner, Fingerprint: fingerprint(der),
		NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(), RenewedFrom: sp.renewedFrom,
		CreatedBy: sp.createdBy, CreatedAt: now, PEM: string(certPEM), Status: Valid,
	}
	e.ID, e.Time, e.Outcome = cove.NewID("aud"), now, audit.Success
	if e.Target == "" {
		e.Target = c.Serial
	}
	if e.Detail == "" {
		e.Detail = string(c.Kind) + " certificate " + c.Serial + " for " + c.CommonName
	}
	err = s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.CreateCertificate(ctx, c); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, e)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("certificate issued", "serial", c.Serial, "kind", c.Kind, "cn", c.CommonName, "owner", c.Owner, "not_after", c.NotAfter)
	return &Issued{Certificate: c, CertPEM: certPEM, KeyPEM: keyPEM, ChainPEM: s.ChainPEM()}, nil
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

// IssueNode issues a node's client certificate at enrollment. It takes no
// principal: the caller has checked the enrollment token. The subject is
// the node ID whatever the CSR asks; without a CSR a key is generated.
func (s *Service) IssueNode(ctx context.Context, nodeID string, csrPEM []byte) (*Issued, error) {
	if !cove.ValidID("node", nodeID) {
		return nil, invalid("node_id", "%q is not a node ID", nodeID)
	}
	sp := spec{kind: Node, cn: nodeID, owner: nodeID, ttl: s.cfg.NodeTTL}
	if len(csrPEM) > 0 {
		csr, err := ParseCSR(csrPEM)
		if err != nil {
			return nil, err
		}
		sp.pub = csr.PublicKey
	}
	return s.issue(ctx, sp, audit.Entry{Action: "ca.certificate.issue", Detail: "node certificate for " + nodeID + " at enrollment"})
}

// RenewNode renews a node's certificate for the node itself, which proved
// it holds current (from VerifyClient). The CSR may name the node and
// nothing else. The old certificate stays valid until it expires.
func (s *Service) RenewNode(ctx context.Context, current *Certificate, csrPEM []byte) (*Issued, error) {
	if current == nil || current.Kind != Node {
		return nil, cove.Errorf(cove.Forbidden, "only a node certificate renews through this call")
	}
	fresh, err := s.store.FindCertificateBySerial(ctx, current.Serial)
	if err != nil {
		if cove.ErrorCode(err) == cove.NotFound {
			return nil, cove.Errorf(cove.Unauthenticated, "the node certificate %s is unknown", current.Serial)
		}
		return nil, err
	}
	switch fresh.status(s.now()) {
	case Revoked:
		return nil, cove.Errorf(cove.Unauthenticated, "the node certificate %s was revoked; enroll the node again", fresh.Serial)
	case Expired:
		return nil, cove.Errorf(cove.Unauthenticated, "the node certificate %s expired; enroll the node again", fresh.Serial)
	}
	sp := spec{kind: Node, cn: fresh.CommonName, owner: fresh.Owner, ttl: s.cfg.NodeTTL, renewedFrom: fresh.Serial}
	if len(csrPEM) > 0 {
		csr, err := ParseCSR(csrPEM)
		if err != nil {
			return nil, err
		}
		if err := sameNames(csr, fresh); err != nil {
			return nil, err
		}
		sp.pub = csr.PublicKey
	}
	return s.issue(ctx, sp, audit.Entry{Action: "ca.certificate.renew", Detail: "node " + fresh.Owner + " renewed certificate " + fresh.Serial})
}

// IssueServer issues a server certificate with a generated key for hosts,
// DNS names or IP addresses; `cove serve` uses it for automatic TLS.
func (s *Service) IssueServer(ctx context.Context, hosts []string) (*Issued, error) {
	if len(hosts) == 0 {
		return nil, invalid("hosts", "a server certificate needs at least one host name or IP address")
	}
	var dns, ips []string
	for _, h := range hosts {
		if net.ParseIP(h) != nil {
			ips = append(ips, h)
		} else {
			dns = append(dns, h)
		}
	}
	sp, err := s.names(spec{kind: Server, cn: hosts[0], owner: "cove", ttl: s.cfg.ServerTTL}, dns, ips)
	if err != nil {
		return nil, err
	}
	return s.issue(ctx, sp, audit.Entry{Action: "ca.certificate.issue", Detail: "server certificate for " + strings.Join(hosts, ", ")})
}

// Issue issues a certificate for p. Platform admins may issue any kind
// with any names for anyone; others only a user certificate whose common
// name is their own email, without other names.
func (s *Service) Issue(ctx context.Context, p cove.Principal, r IssueRequest) (*Issued, error) {
	if p.UserID == "" {
		return nil, cove.Errorf(cove.Unauthenticated, "sign in first")
	}
	if r.Kind == "" {
		r.Kind = User
	}
	if err := r.Kind.Validate(); err != nil {
		return nil, err
	}
	var csr *x509.CertificateRequest
	if len(r.CSRPEM) > 0 {
		var err error
		if csr, err = ParseCSR(r.CSRPEM); err != nil {
			return nil, err
		}
	}
	sp := spec{kind: r.Kind, cn: r.CommonName, owner: r.Owner, createdBy: p.UserID, ttl: s.ttlOf(r.Kind)}
	dns, ips, emails := r.DNSNames, r.IPAddresses, []string(nil)
	if csr != nil {
		sp.pub = csr.PublicKey
		if sp.cn == "" && len(dns) == 0 && len(ips) == 0 {
			sp.cn, dns, emails = csr.Subject.CommonName, csr.DNSNames, csr.EmailAddresses
			for _, ip := range csr.IPAddresses {
				ips = append(ips, ip.String())
			}
			if len(csr.URIs) > 0 {
				return nil, s.deny(ctx, p, "ca.certificate.issue", cove.Errorf(cove.Forbidden, "the CSR asks for URI names; Cove issues none"))
			}
		}
	}
	if sp.cn == "" && r.Kind == User {
		sp.cn = p.Email
	}
	if r.TTL != 0 {
		if r.TTL < MinTTL || r.TTL > sp.ttl {
			return nil, invalid("ttl", "a %s certificate lasts from %s to %s", r.Kind, MinTTL, sp.ttl)
		}
		sp.ttl = r.TTL
	}
	if !p.Admin {
		switch {
		case r.Kind != User:
			return nil, s.deny(ctx, p, "ca.certificate.issue", cove.Errorf(cove.Forbidden, "only platform admins issue %s certificates; you may issue a user certificate for your own email", r.Kind))
		case sp.cn != p.Email:
			return nil, s.deny(ctx, p, "ca.certificate.issue", cove.Errorf(cove.Forbidden, "a user certificate you issue must name your own email %q, not %q", p.Email, sp.cn))
		case len(dns) > 0 || len(ips) > 0:
			return nil, s.deny(ctx, p, "ca.certificate.issue", cove.Errorf(cove.Forbidden, "only platform admins issue certificates with DNS names or IP addresses"))
		case r.Owner != "" && r.Owner != p.UserID:
			return nil, s.deny(ctx, p, "ca.certificate.issue", cove.Errorf(cove.Forbidden, "only platform admins issue certificates for others"))
		}
	}
	for _, em := range emails {
		if r.Kind != User || em != sp.cn {
			return nil, s.deny(ctx, p, "ca.certificate.issue", cove.Errorf(cove.Forbidden, "the CSR asks for email %q; only a user certificate may carry an email, its common name", em))
		}
	}
	if r.Kind == User {
		if a, err := mail.ParseAddress(sp.cn); err != nil || a.Address != sp.cn || a.Name != "" {
			return nil, invalid("common_name", "a user certificate's common name is an email address, not %q", sp.cn)
		}
		sp.emails = []string{sp.cn}
	}
	switch {
	case r.Kind == Node:
		if !cove.ValidID("node", sp.cn) || (sp.owner != "" && sp.owner != sp.cn) {
			return nil, invalid("common_name", "a node certificate's common name is its node ID (node_...), and the node owns it")
		}
		sp.owner = sp.cn
	case sp.owner == "":
		sp.owner = p.UserID
	}
	sp, err := s.names(sp, dns, ips)
	if err != nil {
		return nil, err
	}
	return s.issue(ctx, sp, audit.Entry{ActorID: p.UserID, Action: "ca.certificate.issue"})
}

// deny audits a refused action and returns err.
func (s *Service) deny(ctx context.Context, p cove.Principal, action string, err *cove.Error) error {
	e := audit.Entry{ID: cove.NewID("aud"), Time: s.now(), ActorID: p.UserID, Action: action, Outcome: audit.Denied, Detail: err.Message}
	if aerr := s.store.RecordAudit(ctx, e); aerr != nil {
		s.log.Error("could not audit a refused CA action", "action", action, "err", aerr)
	}
	return err
}

// visible returns the certificate with serial if p may see it: platform
// admins see all, others their own; anything else is not_found.
func (s *Service) visible(ctx context.Context, p cove.Principal, serial string) (*Certificate, error) {
	if p.UserID == "" {
		return nil, cove.Errorf(cove.Unauthenticated, "sign in first")
	}
	norm, err := NormalizeSerial(serial)
	if err != nil {
		return nil, err
	}
	notFound := cove.Errorf(cove.NotFound, "certificate %s not found", norm)
	c, err := s.store.FindCertificateBySerial(ctx, norm)
	if cove.ErrorCode(err) == cove.NotFound {
		return nil, notFound
	} else if err != nil {
		return nil, err
	}
	if !p.Admin && c.Owner != p.UserID {
		return nil, notFound
	}
	c.Status = c.status(s.now())
	return c, nil
}

// Get returns a certificate p may see.
func (s *Service) Get(ctx context.Context, p cove.Principal, serial string) (*Certificate, error) {
	return s.visible(ctx, p, serial)
}

// List returns the certificates p may see that match f.
func (s *Service) List(ctx context.Context, p cove.Principal, f Filter) ([]*Certificate, error) {
	if p.UserID == "" {
		return nil, cove.Errorf(cove.Unauthenticated, "sign in first")
	}
	if f.Kind != "" {
		if err := f.Kind.Validate(); err != nil {
			return nil, err
		}
	}
	switch f.Status {
	case "", Valid, Revoked, Expired:
	default:
		return nil, invalid("status", "status %q is not one of valid, revoked, expired", f.Status)
	}
	if !p.Admin {
		if f.Owner != "" && f.Owner != p.UserID {
			return nil, cove.Errorf(cove.Forbidden, "only platform admins list others' certificates")
		}
		f.Owner = p.UserID
	}
	f.Now, f.Page = s.now(), f.Page.Normalize()
	cs, err := s.store.FindCertificates(ctx, f)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		c.Status = c.status(f.Now)
	}
	return cs, nil
}

// Renew issues a new certificate with the same kind, names and owner as
// the one with serial, for a new key: the CSR's, whose names must be the
// old certificate's, or a generated one. The old certificate stays valid
// until it expires or is revoked; a revoked one cannot be renewed.
func (s *Service) Renew(ctx context.Context, p cove.Principal, serial string, csrPEM []byte) (*Issued, error) {
	old, err := s.visible(ctx, p, serial)
	if err != nil {
		return nil, err
	}
	if !p.Admin && old.Kind != User {
		return nil, s.deny(ctx, p, "ca.certificate.renew", cove.Errorf(cove.Forbidden, "only platform admins renew %s certificates", old.Kind))
	}
	if old.RevokedAt != nil {
		return nil, cove.Errorf(cove.Conflict, "certificate %s was revoked; issue a new one instead", old.Serial)
	}
	sp := spec{kind: old.Kind, cn: old.CommonName, owner: old.Owner, ttl: s.ttlOf(old.Kind), renewedFrom: old.Serial, createdBy: p.UserID}
	if len(csrPEM) > 0 {
		csr, err := ParseCSR(csrPEM)
		if err != nil {
			return nil, err
		}
		if err := sameNames(csr, old); err != nil {
			return nil, s.deny(ctx, p, "ca.certificate.renew", err)
		}
		sp.pub = csr.PublicKey
	}
	if old.Kind == User {
		sp.emails = []string{old.CommonName}
	}
	if sp, err = s.names(sp, old.DNSNames, old.IPAddresses); err != nil {
		return nil, err
	}
	return s.issue(ctx, sp, audit.Entry{ActorID: p.UserID, Action: "ca.certificate.renew", Detail: "renewed certificate " + old.Serial})
}

// Revoke revokes a certificate p may see with an RFC 5280 reason ("" means
// unspecified). It takes effect at once in this process (VerifyClient,
// OCSP, a new CRL) and within the cache TTL in the others.
func (s *Service) Revoke(ctx context.Context, p cove.Principal, serial, reason string) (*Certificate, error) {
	if reason == "" {
		reason = "unspecified"
	}
	if _, ok := Reasons[reason]; !ok {
		return nil, invalid("reason", "reason %q is not one of %s", reason, reasonNames)
	}
	c, err := s.visible(ctx, p, serial)
	if err != nil {
		return nil, err
	}
	if c.RevokedAt != nil {
		return nil, cove.Errorf(cove.Conflict, "certificate %s was already revoked at %s", c.Serial, c.RevokedAt.Format(time.RFC3339))
	}
	now := s.now()
	err = s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.RevokeCertificate(ctx, c.Serial, now, reason); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, audit.Entry{ID: cove.NewID("aud"), Time: now, ActorID: p.UserID, Action: "ca.certificate.revoke", Target: c.Serial, Outcome: audit.Success,
			Detail: string(c.Kind) + " certificate for " + c.CommonName + " revoked: " + reason})
	})
	if err != nil {
		return nil, err
	}
	c.RevokedAt, c.RevocationReason, c.Status = &now, reason, Revoked
	s.forget(c.Serial)
	s.log.Info("certificate revoked", "serial", c.Serial, "kind", c.Kind, "cn", c.CommonName, "reason", reason)
	if err := s.issueCRL(ctx); err != nil {
		// The revocation stands; OCSP and VerifyClient see it. The CRL
		// catches up at the next revocation or refresh.
		s.log.Error("could not re-issue the CRL after a revocation", "serial", c.Serial, "err", err)
	}
	s.mu.Lock()
	hear := s.revocations
	s.mu.Unlock()
	if hear != nil {
		hear.CertificateRevoked(ctx, c)
	}
	return c, nil
}

// forget drops what this process cached about a serial.
func (s *Service) forget(serial string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.certs, serial)
	for k := range s.answers {
		if k.serial == serial {
			delete(s.answers, k)
		}
	}
}

// lookup returns a certificate by serial, from the cache when it was read
// within CacheTTL.
func (s *Service) lookup(ctx context.Context, serial string) (*Certificate, error) {
	s.mu.Lock()
	if e, ok := s.certs[serial]; ok && time.Since(e.at) < s.cfg.CacheTTL {
		s.mu.Unlock()
		return e.c, nil
	}
	s.mu.Unlock()
	c, err := s.store.FindCertificateBySerial(ctx, serial)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if len(s.certs) > 10000 {
		for k, e := range s.certs {
			if time.Since(e.at) >= s.cfg.CacheTTL {
				delete(s.certs, k)
			}
		}
	}
	s.certs[serial] = cachedCert{c: c, at: time.Now()}
	s.mu.Unlock()
	return c, nil
}

// known reports whether the cache holds the certificate with serial and
// fingerprint fp, that is, one this CA issued.
func (s *Service) known(serial, fp string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.certs[serial]
	return ok && e.c.Fingerprint == fp
}

// VerifyClient checks a client certificate presented over TLS: it must
// chain to this CA's root for client auth, be known, unrevoked and
// unexpired. Anything else is Unauthenticated.
func (s *Service) VerifyClient(ctx context.Context, leaf *x509.Certificate) (*Certificate, error) {
	if leaf == nil {
		return nil, cove.Errorf(cove.Unauthenticated, "no client certificate")
	}
	now := s.now()
	fp := fingerprint(leaf.Raw)
	// A certificate whose DER is byte for byte one this CA issued and
	// stored needs no signature check: the check is what costs (two ECDSA
	// verifications), and it is done once, at the first presentation.
	if !s.known(serialOf(leaf), fp) {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: s.roots, Intermediates: s.inters, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			return nil, &cove.Error{Code: cove.Unauthenticated, Message: "the client certificate was not issued by this Cove for client authentication, or is not valid now", Err: err}
		}
	}
	c, err := s.lookup(ctx, serialOf(leaf))
	switch {
	case cove.ErrorCode(err) == cove.NotFound:
		return nil, cove.Errorf(cove.Unauthenticated, "the client certificate %s is unknown", serialOf(leaf))
	case err != nil:
		return nil, err
	case c.Fingerprint != fp:
		return nil, cove.Errorf(cove.Unauthenticated, "the client certificate %s does not match the one issued", c.Serial)
	case c.RevokedAt != nil:
		return nil, cove.Errorf(cove.Unauthenticated, "the client certificate %s was revoked at %s (%s)", c.Serial, c.RevokedAt.Format(time.RFC3339), c.RevocationReason)
	case !now.Before(c.NotAfter) || now.Before(c.NotBefore):
		return nil, cove.Errorf(cove.Unauthenticated, "the client certificate %s is valid only from %s to %s", c.Serial, c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339))
	case c.Kind == Server:
		return nil, cove.Errorf(cove.Unauthenticated, "certificate %s is a server certificate, not one for client authentication", c.Serial)
	}
	out := *c
	out.Status = Valid
	return &out, nil
}
