package computenode

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/tlstrust"
)

// identityFile is the name of the enrollment in the data directory.
const identityFile = "node.json"

// Paths of the control plane's node API.
const (
	EnrollPath = "/api/v1/nodes/enroll"
	SelfPath   = "/api/v1/nodes/self"
	RenewPath  = "/api/v1/nodes/self/renew"
)

// requestTimeout bounds each call to the control plane.
const requestTimeout = 30 * time.Second

// identity is what node.json holds: who the node is, its keys, and the
// certificate and NATS JWT the control plane issued for them. The keys
// are secrets; the file is 0600.
type identity struct {
	NodeID    string `json:"node_id"`
	Name      string `json:"name"`
	ServerURL string `json:"server_url"`
	NATSURL   string `json:"nats_url"`
	// Key is the node's private key (PKCS #8 PEM), which its client
	// certificate certifies; NATSSeed is its NATS user nkey seed.
	Key      string `json:"key"`
	NATSSeed string `json:"nats_seed"`
	// HeartbeatMillis is the heartbeat interval the control plane gave.
	HeartbeatMillis int64 `json:"heartbeat_ms,omitempty"`
	runproto.NodeCredential
	EnrolledAt time.Time `json:"enrolled_at"`
	RenewedAt  time.Time `json:"renewed_at,omitzero"`
}

// valid reports whether the file holds everything a node needs.
func (id identity) valid() bool {
	return validRunID(id.NodeID) && id.NATSURL != "" && id.Key != "" && id.NATSSeed != "" &&
		id.Certificate != "" && id.JWT != ""
}

// tlsCertificate returns the node's client certificate with its chain.
func (id identity) tlsCertificate() (tls.Certificate, error) {
	c, err := tls.X509KeyPair([]byte(id.Certificate+"\n"+id.Chain), []byte(id.Key))
	if err != nil {
		return c, &cove.Error{Code: cove.Invalid, Message: "the node's certificate and key in node.json do not match", Err: err}
	}
	return c, nil
}

// enrollment returns the node's identity from node.json, or enrolls the
// node and writes node.json. A node whose certificate has expired enrolls
// again when it is given a token.
func (n *Node) enrollment(ctx context.Context) (identity, error) {
	path := filepath.Join(n.cfg.DataDir, identityFile)
	id, err := loadIdentity(path)
	switch {
	case err == nil && time.Now().After(id.Expires):
		if n.cfg.Token == "" {
			return id, cove.Errorf(cove.Unauthenticated,
				"the node's certificate expired at %s: enroll it again with a new --token", id.Expires.UTC().Format(time.RFC3339))
		}
		n.log.Warn("the node's certificate expired; enrolling again", "expired", id.Expires)
	case err == nil:
		n.log.Info("using the enrollment in the data directory", "node", id.NodeID, "file", path)
		return id, nil
	case !errors.Is(err, fs.ErrNotExist):
		return id, err
	}

	if n.cfg.ServerURL == "" || n.cfg.Token == "" {
		return identity{}, cove.Errorf(cove.Invalid,
			"the node is not enrolled yet (no %s in %s): give the server URL and an enrollment token", identityFile, n.cfg.DataDir)
	}
	server, err := checkServerURL(n.cfg.ServerURL, n.log)
	if err != nil {
		return identity{}, err
	}
	keys, err := NewKeys("")
	if err != nil {
		return identity{}, err
	}

	hc, err := n.httpClient(identity{})
	if err != nil {
		return identity{}, err
	}
	var reply runproto.EnrollReply
	err = call(ctx, hc, http.MethodPost, server+EnrollPath, runproto.EnrollRequest{
		Token:    n.cfg.Token,
		Name:     n.cfg.Name,
		Capacity: n.cfg.Capacity,
		Drivers:  n.available(),
		Labels:   n.cfg.Labels,
		TEE:      "none",
		CSR:      keys.CSR,
		NATSUser: keys.NATSUser,
	}, &reply)
	if err != nil {
		return identity{}, err
	}
	id = identity{
		NodeID:          reply.NodeID,
		Name:            n.cfg.Name,
		ServerURL:       server,
		NATSURL:         reply.NATSURL,
		Key:             keys.KeyPEM,
		NATSSeed:        string(keys.NATSSeed),
		HeartbeatMillis: reply.HeartbeatMillis,
		NodeCredential:  reply.NodeCredential,
		EnrolledAt:      time.Now().UTC(),
	}
	if !id.valid() {
		return identity{}, cove.Errorf(cove.Internal, "the enrollment reply lacks the node ID, NATS URL, certificate or NATS JWT")
	}
	if _, err := id.tlsCertificate(); err != nil {
		return identity{}, err
	}
	if err := saveIdentity(path, id); err != nil {
		return identity{}, err
	}
	n.log.Info("enrolled", "node", id.NodeID, "expires", id.Expires)
	return id, nil
}

// checkServerURL returns server without a trailing slash if it is an
// http(s) URL, warning about plain HTTP off loopback.
func checkServerURL(server string, log *slog.Logger) (string, error) {
	u, err := url.Parse(strings.TrimRight(server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", cove.Errorf(cove.Invalid, "the server URL %q is not an http(s) URL", server)
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		log.Warn("enrolling over plain HTTP: the token crosses the network in clear, and the node cannot renew its certificate", "server", server)
	}
	return u.String(), nil
}

// Keys are what a node makes before it enrolls. It sends only the public
// halves: the certificate request and the NATS user's public key.
type Keys struct {
	KeyPEM   string // the private key of the client certificate, PKCS #8 PEM
	CSR      string // PEM certificate request for it
	NATSSeed []byte // the NATS user nkey's seed
	NATSUser string // its public key
}

// NewKeys makes a node's keys, with a certificate request for common name
// cn: empty at enrollment, which names the certificate after the node's
// new ID; the node's ID at renewal.
func NewKeys(cn string) (Keys, error) {
	key, csr, err := NewKey(cn)
	if err != nil {
		return Keys{}, err
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		return Keys{}, cove.Wrap(err, "cannot make the node's NATS key")
	}
	defer user.Wipe()
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	// Wipe zeroes the pair's own copy of the seed, which Seed shares.
	return Keys{KeyPEM: key, CSR: csr, NATSSeed: bytes.Clone(seed), NATSUser: pub}, nil
}

// NewKey makes an ECDSA P-256 key and a certificate request for it with
// common name cn, both PEM: what a node renews its certificate with.
func NewKey(cn string) (keyPEM, csrPEM string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", cove.Wrap(err, "cannot make the node's key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", cove.Wrap(err, "cannot encode the node's key")
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		return "", "", cove.Wrap(err, "cannot make the node's certificate request")
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})), nil
}

// httpClient returns the client the node calls the control plane with. It
// trusts the system's roots, Cove's CA chain from the enrollment, the
// configured CA file and pinned fingerprint, and presents the node's
// current certificate when asked for one.
func (n *Node) httpClient(id identity) (*http.Client, error) {
	var caPEM []byte
	if n.cfg.CAFile != "" {
		b, err := os.ReadFile(n.cfg.CAFile)
		if err != nil {
			return nil, &cove.Error{Code: cove.Invalid, Message: "cannot read the CA file " + n.cfg.CAFile, Err: err}
		}
		caPEM = b
	}
	caPEM = append(caPEM, id.Chain...)
	cfg, err := tlstrust.Config(caPEM, n.cfg.CAFingerprint)
	if err != nil {
		return nil, err
	}
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		n.credMu.RLock()
		defer n.credMu.RUnlock()
		if n.tlsCert == nil {
			return &tls.Certificate{}, nil // none yet: enrolling
		}
		return n.tlsCert, nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return &http.Client{Transport: tr, Timeout: requestTimeout}, nil
}

// call sends in as JSON and decodes the answer into out, turning the
// control plane's error body into a cove.Error.
func call(ctx context.Context, hc *http.Client, method, u string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return cove.Wrap(err, "cannot encode the request")
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return cove.Wrap(err, "cannot build the request")
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return &cove.Error{Code: cove.Unavailable, Message: "cannot reach the control plane at " + u + ": " + err.Error(), Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return &cove.Error{Code: cove.Unavailable, Message: "the control plane's answer was cut off", Err: err}
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Code    cove.Code `json:"code"`
			Message string    `json:"message"`
		}
		if json.Unmarshal(data, &e) != nil || e.Code == "" {
			return cove.Errorf(cove.Unavailable, "the control plane answered %s %s with HTTP %d", method, req.URL.Path, resp.StatusCode)
		}
		return cove.Errorf(e.Code, "the control plane refused: %s", e.Message)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &cove.Error{Code: cove.Internal, Message: "the control plane's answer cannot be read", Err: err}
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loadIdentity reads node.json. It refuses a file others may read: it
// holds the node's secret.
func loadIdentity(path string) (identity, error) {
	var id identity
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return id, err
		}
		return id, cove.Wrap(err, "cannot read "+path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return id, cove.Errorf(cove.Invalid, "%s holds the node's secret and is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return id, cove.Wrap(err, "cannot read "+path)
	}
	if err := json.Unmarshal(data, &id); err != nil || !id.valid() {
		return identity{}, cove.Errorf(cove.Invalid, "%s is damaged or from an older Cove: remove it and enroll the node again", path)
	}
	return id, nil
}

// saveIdentity writes node.json atomically, mode 0600.
func saveIdentity(path string, id identity) error {
	data, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return cove.Wrap(err, "cannot encode the enrollment")
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".node-*.json") // 0600
	if err != nil {
		return cove.Wrap(err, "cannot write "+path)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return cove.Wrap(err, "cannot write "+path)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return cove.Wrap(err, "cannot write "+path)
	}
	if err := tmp.Close(); err != nil {
		return cove.Wrap(err, "cannot write "+path)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return cove.Wrap(err, "cannot write "+path)
	}
	return nil
}
