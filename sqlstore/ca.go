package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/ca"
)

// CAStore implements ca.Store.
type CAStore struct {
	db *DB
	q  querier
}

var _ ca.Store = (*CAStore)(nil)

// NewCAStore returns the certificate store of db.
func NewCAStore(db *DB) *CAStore { return &CAStore{db: db, q: db.sql} }

// Atomic runs fn in one transaction.
func (s *CAStore) Atomic(ctx context.Context, fn func(ca.Store) error) error {
	return s.db.atomic(ctx, s.q, func(tx querier) error { return fn(&CAStore{db: s.db, q: tx}) })
}

const certColumns = `id, serial, kind, common_name, dns_names, ip_addresses, owner, fingerprint, not_before, not_after,
	revoked_at, revocation_reason, renewed_from, created_by, created_at, pem`

func scanCert(r interface{ Scan(...any) error }) (*ca.Certificate, error) {
	var (
		c        ca.Certificate
		dns, ips string
		revoked  sql.NullTime
	)
	err := r.Scan(&c.ID, &c.Serial, &c.Kind, &c.CommonName, &dns, &ips, &c.Owner, &c.Fingerprint, &c.NotBefore, &c.NotAfter,
		&revoked, &c.RevocationReason, &c.RenewedFrom, &c.CreatedBy, &c.CreatedAt, &c.PEM)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(dns), &c.DNSNames); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(ips), &c.IPAddresses); err != nil {
		return nil, err
	}
	c.RevokedAt = timePtr(revoked)
	c.NotBefore, c.NotAfter, c.CreatedAt = c.NotBefore.UTC(), c.NotAfter.UTC(), c.CreatedAt.UTC()
	return &c, nil
}

// CreateCertificate inserts c.
func (s *CAStore) CreateCertificate(ctx context.Context, c *ca.Certificate) error {
	dns, err := json.Marshal(c.DNSNames)
	if err != nil {
		return cove.Wrap(err, "could not encode the DNS names")
	}
	ips, err := json.Marshal(c.IPAddresses)
	if err != nil {
		return cove.Wrap(err, "could not encode the IP addresses")
	}
	_, err = s.q.ExecContext(ctx, `INSERT INTO ca_certificates (`+certColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
		c.ID, c.Serial, string(c.Kind), c.CommonName, string(dns), string(ips), c.Owner, c.Fingerprint, c.NotBefore.UTC(), c.NotAfter.UTC(),
		nullTime(c.RevokedAt), c.RevocationReason, c.RenewedFrom, c.CreatedBy, c.CreatedAt.UTC(), c.PEM)
	return s.db.fail(err, "could not store the certificate")
}

// FindCertificateBySerial returns a certificate.
func (s *CAStore) FindCertificateBySerial(ctx context.Context, serial string) (*ca.Certificate, error) {
	c, err := scanCert(s.q.QueryRowContext(ctx, `SELECT `+certColumns+` FROM ca_certificates WHERE serial = $1`, serial))
	return c, s.db.one(err, "certificate "+serial+" not found")
}

// FindCertificates lists certificates by ID.
func (s *CAStore) FindCertificates(ctx context.Context, f ca.Filter) ([]*ca.Certificate, error) {
	args := []any{f.Page.After}
	where := []string{`id > $1`}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Kind != "" {
		where = append(where, `kind = `+arg(string(f.Kind)))
	}
	if f.Owner != "" {
		where = append(where, `owner = `+arg(f.Owner))
	}
	switch f.Status {
	case ca.Valid:
		where = append(where, `revoked_at IS NULL AND not_after > `+arg(f.Now.UTC()))
	case ca.Expired:
		where = append(where, `revoked_at IS NULL AND not_after <= `+arg(f.Now.UTC()))
	case ca.Revoked:
		where = append(where, `revoked_at IS NOT NULL`)
	}
	limit := f.Page.Limit
	if limit <= 0 {
		limit = cove.DefaultPageLimit
	}
	rows, err := s.q.QueryContext(ctx, `SELECT `+certColumns+` FROM ca_certificates WHERE `+strings.Join(where, " AND ")+` ORDER BY id LIMIT `+arg(limit), args...)
	if err != nil {
		return nil, s.db.fail(err, "could not list certificates")
	}
	return collect(rows, scanCert)
}

// RevokeCertificate marks an unrevoked certificate revoked.
func (s *CAStore) RevokeCertificate(ctx context.Context, serial string, at time.Time, reason string) error {
	res, err := s.q.ExecContext(ctx, `UPDATE ca_certificates SET revoked_at = $2, revocation_reason = $3 WHERE serial = $1 AND revoked_at IS NULL`, serial, at.UTC(), reason)
	if err := s.db.affected(res, err, "certificate "+serial+" not found"); cove.ErrorCode(err) == cove.NotFound {
		if _, ferr := s.FindCertificateBySerial(ctx, serial); ferr != nil {
			return ferr
		}
		return cove.Errorf(cove.Conflict, "certificate %s is already revoked", serial)
	} else if err != nil {
		return err
	}
	return nil
}

// FindRevokedCertificates returns the revoked certificates unexpired at now.
func (s *CAStore) FindRevokedCertificates(ctx context.Context, now time.Time) ([]ca.RevokedEntry, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT serial, revoked_at, revocation_reason FROM ca_certificates
		WHERE revoked_at IS NOT NULL AND not_after > $1 ORDER BY serial`, now.UTC())
	if err != nil {
		return nil, s.db.fail(err, "could not list revoked certificates")
	}
	return collect(rows, func(r interface{ Scan(...any) error }) (ca.RevokedEntry, error) {
		var e ca.RevokedEntry
		err := r.Scan(&e.Serial, &e.RevokedAt, &e.Reason)
		e.RevokedAt = e.RevokedAt.UTC()
		return e, err
	})
}

// CreateCRL stores a CRL.
func (s *CAStore) CreateCRL(ctx context.Context, c *ca.CRL) error {
	_, err := s.q.ExecContext(ctx, `INSERT INTO ca_crls (number, this_update, next_update, der) VALUES ($1, $2, $3, $4)`,
		c.Number, c.ThisUpdate.UTC(), c.NextUpdate.UTC(), c.DER)
	if err := s.db.fail(err, "CRL number "+strconv.FormatInt(c.Number, 10)+" is taken"); err != nil {
		return err
	}
	// Old CRLs are kept a while for inspection, not forever.
	_, err = s.q.ExecContext(ctx, `DELETE FROM ca_crls WHERE number < $1`, c.Number-100)
	return s.db.fail(err, "could not prune old CRLs")
}

// LatestCRL returns the CRL with the highest number.
func (s *CAStore) LatestCRL(ctx context.Context) (*ca.CRL, error) {
	var c ca.CRL
	err := s.q.QueryRowContext(ctx, `SELECT number, this_update, next_update, der FROM ca_crls ORDER BY number DESC LIMIT 1`).
		Scan(&c.Number, &c.ThisUpdate, &c.NextUpdate, &c.DER)
	c.ThisUpdate, c.NextUpdate = c.ThisUpdate.UTC(), c.NextUpdate.UTC()
	if err != nil {
		return nil, s.db.one(err, "no CRL was issued yet")
	}
	return &c, nil
}

// RecordAudit appends an audit entry in the store's transaction.
func (s *CAStore) RecordAudit(ctx context.Context, e audit.Entry) error {
	return recordAudit(ctx, s.db, s.q, e)
}
