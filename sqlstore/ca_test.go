package sqlstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/ca"
	"github.com/covecompute/cove/sqlstore"
)

func TestCAStore(t *testing.T) {
	for name, url := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := sqlstore.NewCAStore(mustOpen(t, url))
			now := time.Now().UTC().Truncate(time.Microsecond)
			cert := func(serial string, kind ca.Kind, owner string, notAfter time.Time) *ca.Certificate {
				return &ca.Certificate{
					ID: cove.NewID("crt"), Serial: serial, Kind: kind, CommonName: "cn-" + serial, DNSNames: []string{"a.example.com"}, IPAddresses: []string{"10.0.0.1"},
					Owner: owner, Fingerprint: "sha256:" + serial, NotBefore: now.Add(-time.Minute), NotAfter: notAfter, CreatedAt: now, PEM: "pem-" + serial,
				}
			}
			certs := []*ca.Certificate{
				cert("a1", ca.User, "usr_a", now.Add(time.Hour)),
				cert("b2", ca.Node, "node_b", now.Add(time.Hour)),
				cert("c3", ca.User, "usr_a", now.Add(-time.Second)), // expired
				cert("d4", ca.Server, "cove", now.Add(time.Hour)),
			}
			for _, c := range certs {
				if err := s.CreateCertificate(ctx, c); err != nil {
					t.Fatal(err)
				}
			}
			dup := cert("a1", ca.User, "usr_a", now)
			if err := s.CreateCertificate(ctx, dup); cove.ErrorCode(err) != cove.Conflict {
				t.Fatalf("duplicate serial: %v", err)
			}
			got, err := s.FindCertificateBySerial(ctx, "b2")
			if err != nil || got.Owner != "node_b" || got.Kind != ca.Node || got.DNSNames[0] != "a.example.com" || got.IPAddresses[0] != "10.0.0.1" ||
				!got.NotAfter.Equal(certs[1].NotAfter) || got.RevokedAt != nil || got.PEM != "pem-b2" {
				t.Fatalf("find: %+v %v", got, err)
			}
			if _, err := s.FindCertificateBySerial(ctx, "ff"); cove.ErrorCode(err) != cove.NotFound {
				t.Fatalf("missing serial: %v", err)
			}

			if err := s.RevokeCertificate(ctx, "d4", now, "key_compromise"); err != nil {
				t.Fatal(err)
			}
			if err := s.RevokeCertificate(ctx, "d4", now, "superseded"); cove.ErrorCode(err) != cove.Conflict {
				t.Fatalf("revoke twice: %v", err)
			}
			if err := s.RevokeCertificate(ctx, "ff", now, ""); cove.ErrorCode(err) != cove.NotFound {
				t.Fatalf("revoke missing: %v", err)
			}
			if err := s.RevokeCertificate(ctx, "c3", now, "superseded"); err != nil { // expired, so off the CRL
				t.Fatal(err)
			}
			revoked, err := s.FindRevokedCertificates(ctx, now)
			if err != nil || len(revoked) != 1 || revoked[0].Serial != "d4" || revoked[0].Reason != "key_compromise" || !revoked[0].RevokedAt.Equal(now) {
				t.Fatalf("revoked: %+v %v", revoked, err)
			}

			count := func(f ca.Filter) int {
				f.Now = now
				if f.Page.Limit == 0 {
					f.Page.Limit = 50
				}
				cs, err := s.FindCertificates(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				return len(cs)
			}
			for _, c := range []struct {
				f    ca.Filter
				want int
			}{
				{ca.Filter{}, 4},
				{ca.Filter{Owner: "usr_a"}, 2},
				{ca.Filter{Kind: ca.Node}, 1},
				{ca.Filter{Status: ca.Valid}, 2},
				{ca.Filter{Status: ca.Revoked}, 2},
				{ca.Filter{Status: ca.Expired}, 0}, // c3 is revoked, which wins
				{ca.Filter{Owner: "usr_a", Status: ca.Valid}, 1},
				{ca.Filter{Page: cove.Page{Limit: 3}}, 3},
				{ca.Filter{Page: cove.Page{After: certs[2].ID, Limit: 10}}, 1},
			} {
				if n := count(c.f); n != c.want {
					t.Errorf("filter %+v: %d certificates, want %d", c.f, n, c.want)
				}
			}

			if _, err := s.LatestCRL(ctx); cove.ErrorCode(err) != cove.NotFound {
				t.Fatalf("no CRL yet: %v", err)
			}
			for n := int64(1); n <= 3; n++ {
				if err := s.CreateCRL(ctx, &ca.CRL{Number: n, ThisUpdate: now, NextUpdate: now.Add(time.Hour), DER: []byte{byte(n), 0, 1}}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.CreateCRL(ctx, &ca.CRL{Number: 2, ThisUpdate: now, NextUpdate: now, DER: []byte{9}}); cove.ErrorCode(err) != cove.Conflict {
				t.Fatalf("CRL number taken: %v", err)
			}
			crl, err := s.LatestCRL(ctx)
			if err != nil || crl.Number != 3 || crl.DER[0] != 3 || !crl.NextUpdate.Equal(now.Add(time.Hour)) {
				t.Fatalf("latest CRL: %+v %v", crl, err)
			}

			// A failed transaction leaves no certificate behind.
			err = s.Atomic(ctx, func(tx ca.Store) error {
				if err := tx.CreateCertificate(ctx, cert("e5", ca.Agent, "x", now)); err != nil {
					return err
				}
				return cove.Errorf(cove.Invalid, "stop")
			})
			if _, ferr := s.FindCertificateBySerial(ctx, "e5"); cove.ErrorCode(err) != cove.Invalid || cove.ErrorCode(ferr) != cove.NotFound {
				t.Fatalf("rollback: %v %v", err, ferr)
			}
		})
	}
}
