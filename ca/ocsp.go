package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"io"
	"math/big"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/covecompute/cove"
)

// OIDs of the OCSP extensions Cove uses (RFC 6960 4.4.1 and 4.2.2.2.1).
var (
	oidOCSPNonce   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}
	oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}
	asn1Null       = []byte{0x05, 0x00}
)

// maxNonce is the longest nonce accepted (RFC 8954: 1 to 32 octets).
const maxNonce = 32

// responder is the delegated OCSP responder: a key that lives only in
// memory and a short-lived certificate from the intermediate with
// id-pkix-ocsp-nocheck, so that clients need not check the responder's
// own status. Being unrevocable, it must be short-lived, and its key never
// touches the disk.
type responder struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// renewResponder makes a new responder and schedules the next renewal at
// half its life.
func (s *Service) renewResponder() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return cove.Wrap(err, "could not generate the OCSP responder key")
	}
	now := s.now()
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{Organization: []string{"Cove"}, CommonName: "Cove OCSP Responder"},
		NotBefore: now.Add(-clockSkew), NotAfter: now.Add(s.cfg.ResponderTTL),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
		BasicConstraintsValid: true,
		ExtraExtensions:       []pkix.Extension{{Id: oidOCSPNoCheck, Value: asn1Null}},
	}
	_, cert, err := sign(tmpl, s.h.intermediate, key.Public(), s.h.key)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.responder = &responder{cert: cert, key: key}
	clear(s.answers)
	s.mu.Unlock()
	s.schedule(&s.responderTimer, s.cfg.ResponderTTL/2, func() {
		if err := s.renewResponder(); err != nil {
			s.log.Error("could not renew the OCSP responder certificate; retrying in a minute", "err", err)
			s.schedule(&s.responderTimer, time.Minute, func() { _ = s.renewResponder() })
		}
	})
	return nil
}

// issuerHashes computes the intermediate's name and key hashes for every
// hash an OCSP request may use, to recognize requests about its
// certificates.
func issuerHashes(issuer *x509.Certificate) (map[crypto.Hash][2][]byte, error) {
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil, cove.Wrap(err, "could not read the intermediate's public key")
	}
	out := map[crypto.Hash][2][]byte{}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		name := h.New()
		name.Write(issuer.RawSubject)
		key := h.New()
		key.Write(spki.PublicKey.RightAlign())
		out[h] = [2][]byte{name.Sum(nil), key.Sum(nil)}
	}
	return out, nil
}

// The OCSP request as RFC 6960 4.1.1 defines it, down to the request
// extensions, which x/crypto/ocsp does not expose.
type ocspRequestASN1 struct {
	TBSRequest        tbsRequestASN1
	OptionalSignature asn1.RawValue `asn1:"explicit,tag:0,optional"`
}

type tbsRequestASN1 struct {
	Version           int           `asn1:"explicit,tag:0,default:0,optional"`
	RequestorName     asn1.RawValue `asn1:"explicit,tag:1,optional"`
	RequestList       []asn1.RawValue
	RequestExtensions []pkix.Extension `asn1:"explicit,tag:2,optional"`
}

// ParseOCSPRequest parses a DER OCSP request for one certificate and
// returns it with the value of its nonce extension (nil without one).
// Anything malformed, including a nonce longer than 32 octets, is Invalid.
func ParseOCSPRequest(der []byte) (*ocsp.Request, []byte, error) {
	req, err := ocsp.ParseRequest(der)
	if err != nil {
		return nil, nil, invalid("request", "malformed OCSP request")
	}
	if req.SerialNumber == nil || req.SerialNumber.Sign() <= 0 {
		return nil, nil, invalid("request", "the OCSP request has no valid serial number")
	}
	var raw ocspRequestASN1
	if rest, err := asn1.Unmarshal(der, &raw); err != nil || len(rest) > 0 {
		return nil, nil, invalid("request", "malformed OCSP request")
	}
	var nonce []byte
	for _, e := range raw.TBSRequest.RequestExtensions {
		if !e.Id.Equal(oidOCSPNonce) {
			continue
		}
		// The value is an OCTET STRING (RFC 8954); some old clients send
		// the bare octets, which are echoed all the same.
		var inner []byte
		if rest, err := asn1.Unmarshal(e.Value, &inner); err != nil || len(rest) > 0 {
			inner = e.Value
		}
		if len(inner) == 0 || len(inner) > maxNonce {
			return nil, nil, invalid("request", "the OCSP nonce must be 1 to %d octets", maxNonce)
		}
		nonce = e.Value
	}
	return req, nonce, nil
}

// answerKey names a cached OCSP answer: one per serial and hash.
type answerKey struct {
	serial string
	hash   crypto.Hash
}

type cachedAnswer struct {
	der []byte
	at  time.Time
}

// RespondOCSP answers a DER OCSP request with a DER OCSP response, signed
// by the delegated responder: good, revoked (with time and reason) or
// unknown; the nonce echoed when the request has one. A malformed request
// gets the malformedRequest response, a request about another issuer's
// certificate unauthorized, and a failure of the store tryLater; it never
// fails otherwise. Answers without a nonce are reused for CacheTTL.
func (s *Service) RespondOCSP(ctx context.Context, der []byte) []byte {
	req, nonce, err := ParseOCSPRequest(der)
	if err != nil {
		return ocsp.MalformedRequestErrorResponse
	}
	hashes, ok := s.issuerHashes[req.HashAlgorithm]
	if !ok || !bytes.Equal(hashes[0], req.IssuerNameHash) || !bytes.Equal(hashes[1], req.IssuerKeyHash) {
		return ocsp.UnauthorizedErrorResponse
	}
	serial := req.SerialNumber.Text(16)
	key := answerKey{serial, req.HashAlgorithm}
	s.mu.Lock()
	r := s.responder
	if a, ok := s.answers[key]; ok && nonce == nil && time.Since(a.at) < s.cfg.CacheTTL {
		s.mu.Unlock()
		return a.der
	}
	s.mu.Unlock()

	now := s.now()
	tmpl := ocsp.Response{Status: ocsp.Good, SerialNumber: req.SerialNumber, ThisUpdate: now, NextUpdate: now.Add(s.cfg.OCSPTTL),
		Certificate: r.cert, IssuerHash: req.HashAlgorithm}
	c, err := s.lookup(ctx, serial)
	switch {
	case cove.ErrorCode(err) == cove.NotFound:
		tmpl.Status = ocsp.Unknown
	case err != nil:
		s.log.Error("OCSP: could not read a certificate", "serial", serial, "err", err)
		return ocsp.TryLaterErrorResponse
	case c.RevokedAt != nil:
		tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, *c.RevokedAt, Reasons[c.RevocationReason]
	}
	var out []byte
	if nonce == nil {
		out, err = ocsp.CreateResponse(s.h.intermediate, r.cert, tmpl, r.key)
	} else if out, err = ocsp.CreateResponse(s.h.intermediate, r.cert, tmpl, unsigned{r.key}); err == nil {
		// Signed once, after the nonce is in.
		out, err = withNonce(out, nonce, r.key)
	}
	if err != nil {
		s.log.Error("OCSP: could not sign an answer", "serial", serial, "err", err)
		return ocsp.InternalErrorErrorResponse
	}
	if nonce == nil {
		s.mu.Lock()
		if len(s.answers) > 10000 {
			clear(s.answers)
		}
		s.answers[key] = cachedAnswer{der: out, at: time.Now()}
		s.mu.Unlock()
	}
	return out
}

// unsigned is a signer that only pretends to sign: a response that
// withNonce signs again need not be signed first.
type unsigned struct{ crypto.Signer }

func (unsigned) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return nil, nil }

// The OCSP response as RFC 6960 4.2.1 defines it, as far as adding the
// nonce to responseExtensions needs: x/crypto/ocsp writes extensions only
// into the single response, where clients do not look for the nonce.
type ocspResponseASN1 struct {
	Status        asn1.Enumerated
	ResponseBytes responseBytesASN1 `asn1:"explicit,tag:0,optional"`
}

type responseBytesASN1 struct {
	ResponseType asn1.ObjectIdentifier
	Response     []byte
}

type basicResponseASN1 struct {
	TBSResponseData    responseDataASN1
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          asn1.BitString
	Certs              []asn1.RawValue `asn1:"explicit,tag:0,optional"`
}

type responseDataASN1 struct {
	Version            int `asn1:"optional,default:0,explicit,tag:0"`
	ResponderID        asn1.RawValue
	ProducedAt         time.Time `asn1:"generalized"`
	Responses          []asn1.RawValue
	ResponseExtensions []pkix.Extension `asn1:"explicit,tag:1,optional"`
}

// withNonce adds the nonce extension to a response made by
// ocsp.CreateResponse and signs it again with the responder's key (ECDSA
// P-256 with SHA-256, the algorithm CreateResponse chose for it).
func withNonce(der, nonce []byte, key crypto.Signer) ([]byte, error) {
	var resp ocspResponseASN1
	if _, err := asn1.Unmarshal(der, &resp); err != nil {
		return nil, err
	}
	var basic basicResponseASN1
	if _, err := asn1.Unmarshal(resp.ResponseBytes.Response, &basic); err != nil {
		return nil, err
	}
	basic.TBSResponseData.ResponseExtensions = append(basic.TBSResponseData.ResponseExtensions, pkix.Extension{Id: oidOCSPNonce, Value: nonce})
	tbs, err := asn1.Marshal(basic.TBSResponseData)
	if err != nil {
		return nil, err
	}
	digest := crypto.SHA256.New()
	digest.Write(tbs)
	sig, err := key.Sign(rand.Reader, digest.Sum(nil), crypto.SHA256)
	if err != nil {
		return nil, err
	}
	basic.Signature = asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}
	if resp.ResponseBytes.Response, err = asn1.Marshal(basic); err != nil {
		return nil, err
	}
	return asn1.Marshal(resp)
}

// ResponseNonce returns the nonce extension value of a DER OCSP response,
// or nil; clients and tests use it to check the echo.
func ResponseNonce(der []byte) []byte {
	var resp ocspResponseASN1
	if _, err := asn1.Unmarshal(der, &resp); err != nil {
		return nil
	}
	var basic basicResponseASN1
	if _, err := asn1.Unmarshal(resp.ResponseBytes.Response, &basic); err != nil {
		return nil
	}
	for _, e := range basic.TBSResponseData.ResponseExtensions {
		if e.Id.Equal(oidOCSPNonce) {
			return e.Value
		}
	}
	return nil
}

// CRL returns the current CRL in DER: from memory when it was read within
// CacheTTL, else the latest in the store, which another replica may have
// issued.
func (s *Service) CRL(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	c, fresh := s.crl, time.Since(s.crlRead) < s.cfg.CacheTTL
	s.mu.Unlock()
	if c != nil && fresh {
		return c.DER, nil
	}
	latest, err := s.store.LatestCRL(ctx)
	if err != nil {
		if c != nil {
			return c.DER, nil // stale but signed and unexpired beats none
		}
		return nil, err
	}
	if !s.now().Before(latest.NextUpdate) {
		if err := s.issueCRL(ctx); err != nil {
			return nil, err
		}
		return s.CRL(ctx)
	}
	s.setCRL(latest)
	return latest.DER, nil
}

func (s *Service) setCRL(c *CRL) {
	s.mu.Lock()
	s.crl, s.crlRead = c, time.Now()
	s.mu.Unlock()
}

// refreshCRL issues a CRL when the store has none past half its life, and
// schedules the next refresh for when the current one reaches it.
func (s *Service) refreshCRL(ctx context.Context) error {
	latest, err := s.store.LatestCRL(ctx)
	if err != nil && cove.ErrorCode(err) != cove.NotFound {
		return err
	}
	if latest == nil || !s.now().Before(latest.ThisUpdate.Add(s.cfg.CRLTTL/2)) || !latest.NextUpdate.After(s.now()) {
		return s.issueCRL(ctx)
	}
	s.setCRL(latest)
	s.scheduleCRL(latest)
	return nil
}

// scheduleCRL arms the timer that refreshes the CRL at half the life of c.
func (s *Service) scheduleCRL(c *CRL) {
	s.schedule(&s.crlTimer, c.ThisUpdate.Add(c.NextUpdate.Sub(c.ThisUpdate)/2).Sub(s.now()), func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.refreshCRL(ctx); err != nil {
			s.log.Error("could not refresh the CRL; retrying in a minute", "err", err)
			s.schedule(&s.crlTimer, time.Minute, func() { _ = s.refreshCRL(context.Background()) })
		}
	})
}

// issueCRL signs a CRL of every revoked, unexpired certificate with the
// next number and stores it. Two replicas issuing at once cannot take the
// same number: the loser's insert is a conflict, and it tries again.
func (s *Service) issueCRL(ctx context.Context) error {
	var crl *CRL
	var err error
	for range 3 {
		if crl, err = s.signCRL(ctx); cove.ErrorCode(err) != cove.Conflict {
			break
		}
	}
	if err != nil {
		return err
	}
	s.setCRL(crl)
	s.scheduleCRL(crl)
	return nil
}

func (s *Service) signCRL(ctx context.Context) (*CRL, error) {
	var crl *CRL
	err := s.store.Atomic(ctx, func(tx Store) error {
		var number int64
		last, err := tx.LatestCRL(ctx)
		switch {
		case err == nil:
			number = last.Number
		case cove.ErrorCode(err) != cove.NotFound:
			return err
		}
		now := s.now()
		revoked, err := tx.FindRevokedCertificates(ctx, now)
		if err != nil {
			return err
		}
		tmpl := &x509.RevocationList{Number: big.NewInt(number + 1), ThisUpdate: now, NextUpdate: now.Add(s.cfg.CRLTTL)}
		for _, r := range revoked {
			serial, ok := new(big.Int).SetString(r.Serial, 16)
			if !ok {
				return cove.Errorf(cove.Internal, "stored serial %q is not hex", r.Serial)
			}
			tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: serial, RevocationTime: r.RevokedAt, ReasonCode: Reasons[r.Reason]})
		}
		der, err := x509.CreateRevocationList(rand.Reader, tmpl, s.h.intermediate, s.h.key)
		if err != nil {
			return cove.Wrap(err, "could not sign the CRL")
		}
		crl = &CRL{Number: number + 1, ThisUpdate: now, NextUpdate: tmpl.NextUpdate, DER: der}
		return tx.CreateCRL(ctx, crl)
	})
	return crl, err
}
