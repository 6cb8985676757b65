package app

import (
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/config"
)

// The listener serves HTTPS unless http.tls.mode is off. Either way it asks
// clients for a certificate and accepts one that chains to Cove's CA, so
// that compute nodes can authenticate with theirs (mTLS); users are not
// asked to present one. Revocation is checked per request, by the routes
// that take node certificates, not in the handshake.

// serverCertRenewAt is the share of an auto certificate's lifetime after
// which it is replaced.
const serverCertRenewAt = 2.0 / 3

// serverCert is the listener's current certificate; auto mode replaces it.
type serverCert struct {
	mu      sync.RWMutex
	cert    *tls.Certificate
	timer   *time.Timer // the next renewal
	stopped bool
}

func (s *serverCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cert, nil
}

func (s *serverCert) set(c *tls.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cert = c
}

// stop ends the renewals.
func (s *serverCert) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.timer != nil {
		s.timer.Stop()
	}
}

// listenerTLS returns the listener's TLS configuration, or nil for plain
// HTTP.
func (m *Main) listenerTLS(ctx context.Context) (*tls.Config, error) {
	c := m.Config.HTTP.TLS
	m.tlsCert = &serverCert{}
	switch c.Mode {
	case config.TLSOff:
		return nil, nil
	case config.TLSFile:
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, cove.Errorf(cove.Invalid, "cannot load the listener's certificate (http.tls.cert_file, http.tls.key_file): %v", err)
		}
		m.tlsCert.set(&cert)
	default:
		renew, err := m.issueServerCert(ctx)
		if err != nil {
			return nil, err
		}
		m.renewServerCert(renew)
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: m.tlsCert.get,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      m.CA.Roots(),
	}, nil
}

// issueServerCert gets the listener a certificate from Cove's CA for every
// name it may be reached by, and returns when to renew it: at two thirds
// of its lifetime, counted from now, since the CA backdates NotBefore.
func (m *Main) issueServerCert(ctx context.Context) (time.Duration, error) {
	issued, err := m.CA.IssueServer(ctx, m.serverHosts())
	if err != nil {
		return 0, err
	}
	// The chain goes out whole, root included, so that a client pinning
	// the root's fingerprint finds it.
	cert, err := tls.X509KeyPair(append(issued.CertPEM, issued.ChainPEM...), issued.KeyPEM)
	if err != nil {
		return 0, cove.Wrap(err, "the CA issued a server certificate that cannot be used")
	}
	m.tlsCert.set(&cert)
	return time.Duration(float64(time.Until(issued.Certificate.NotAfter)) * serverCertRenewAt), nil
}

// renewServerCert replaces the listener's certificate after wait, and
// again and again until stop; a minute after a failed try.
func (m *Main) renewServerCert(wait time.Duration) {
	m.tlsCert.mu.Lock()
	defer m.tlsCert.mu.Unlock()
	if m.tlsCert.stopped {
		return
	}
	m.tlsCert.timer = time.AfterFunc(wait, func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		next, err := m.issueServerCert(ctx)
		if err != nil {
			m.Log.Error("could not renew the listener's certificate; trying again in a minute", "err", err)
			next = time.Minute
		} else {
			m.Log.Info("renewed the listener's certificate")
		}
		m.renewServerCert(next)
	})
}

// serverHosts lists the names and addresses the auto certificate covers:
// loopback, the listen address, the host name, the public URL's host and
// http.tls.hosts.
func (m *Main) serverHosts() []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	add := func(h string) {
		h = strings.TrimSpace(h)
		if h == "" {
			return
		}
		if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
			return
		}
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	if host, _, err := net.SplitHostPort(m.Config.HTTP.Addr); err == nil {
		add(host)
	}
	if name, err := os.Hostname(); err == nil && dnsName(name) {
		add(name)
	}
	if u, err := url.Parse(m.Config.HTTP.PublicURL); err == nil {
		add(u.Hostname())
	}
	for _, h := range strings.Split(m.Config.HTTP.TLS.Hosts, ",") {
		add(h)
	}
	return hosts
}

// dnsName reports whether h can stand in a certificate as a DNS name; a
// host name that cannot is left out rather than failing the start.
func dnsName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
