package cli

import (
	"crypto/tls"
	"os"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/tlstrust"
)

// trust is how the CLI trusts a server's certificate, and what login saves
// of it.
type trust struct {
	config      *tls.Config // nil: the system's roots
	caPEM       string
	fingerprint string
}

// trust resolves how to trust server: --ca-file/--ca-fingerprint, then
// COVE_CA_FILE/COVE_CA_FINGERPRINT, then what the saved login for the same
// server trusted, else the system's roots.
func (a *app) trust(saved *credentials, server string) (trust, error) {
	caFile, fp := a.caFile, a.caFingerprint
	if caFile == "" && fp == "" {
		caFile, fp = os.Getenv(EnvCAFile), os.Getenv(EnvCAFingerprint)
	}
	var t trust
	switch {
	case caFile != "" || fp != "":
		if caFile != "" {
			b, err := os.ReadFile(caFile)
			if err != nil {
				return t, cove.Errorf(cove.Invalid, "cannot read --ca-file %s: %v", caFile, err)
			}
			t.caPEM = string(b)
		}
		if fp != "" {
			norm, err := tlstrust.NormalizeFingerprint(fp)
			if err != nil {
				return t, err
			}
			t.fingerprint = norm
		}
	case saved != nil && normalizeURL(saved.Server) == server:
		t.caPEM, t.fingerprint = saved.CA, saved.CAFingerprint
	}
	if t.caPEM == "" && t.fingerprint == "" {
		return t, nil
	}
	cfg, err := tlstrust.Config([]byte(t.caPEM), t.fingerprint)
	if err != nil {
		return t, err
	}
	t.config = cfg
	return t, nil
}
