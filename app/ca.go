package app

import (
	"context"
	"path/filepath"

	"github.com/covecompute/cove/ca"
	"github.com/covecompute/cove/sqlstore"
)

// caParts are the fields of Main that the certificate authority adds.
type caParts struct {
	// CA is the certificate authority: node, agent, user and server
	// certificates, OCSP and the CRL.
	CA *ca.Service
	// CAScryptWorkFactor, when set before Run, replaces age's scrypt work
	// factor for newly encrypted CA keys; tests lower it.
	CAScryptWorkFactor int
}

// startCA opens the CA with its keys in <data_dir>/ca (created at the
// first start) and mounts its routes, among them the public /ocsp and
// /crl. Certificates name the public URL, or the listener's address once
// it is known.
func (m *Main) startCA(ctx context.Context) error {
	c := m.Config.CA
	var err error
	m.CA, err = ca.Open(ctx, sqlstore.NewCAStore(m.DB), ca.Config{
		Dir: filepath.Join(m.Config.DataDir, "ca"), Passphrase: c.Passphrase, BaseURL: m.caBaseURL,
		NodeTTL: c.NodeCertTTL, UserTTL: c.UserCertTTL, ServerTTL: c.ServerCertTTL, AgentTTL: c.AgentCertTTL,
		ResponderTTL: c.ResponderTTL, OCSPTTL: c.OCSPTTL, CRLTTL: c.CRLTTL,
		ScryptWorkFactor: m.CAScryptWorkFactor, Log: m.Log.With("component", "ca"),
	})
	if err != nil {
		return err
	}
	m.API.MountCA(m.CA)
	return nil
}

// caBaseURL is where certificates say OCSP and the CRL are: m.URL once
// the server listens (the public URL when configured), before that the
// configured public URL or listen address.
func (m *Main) caBaseURL() string {
	switch {
	case m.URL != "":
		return m.URL
	case m.Config.HTTP.PublicURL != "":
		return m.Config.HTTP.PublicURL
	}
	return "http://" + m.Config.HTTP.Addr
}

// closeCA stops the CA's timers; Main.close calls it before closing the
// stores.
func (m *Main) closeCA() {
	if m.CA != nil {
		m.CA.Close()
	}
}
