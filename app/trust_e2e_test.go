package app_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/config"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/node"
	"github.com/covecompute/cove/node/nodetest"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/samples/samplestest"
	"github.com/covecompute/cove/sdk"
	"github.com/covecompute/cove/tlstrust"
)

// trusted maps the HTTPS base URL of each test control plane to the TLS
// configuration that trusts its CA, so that client() reaches it.
var trusted sync.Map // string -> *tls.Config

// trustFor returns the options that make an SDK client trust url's CA.
func trustFor(url string) []sdk.Option {
	if cfg, ok := trusted.Load(url); ok {
		return []sdk.Option{sdk.WithTLS(cfg.(*tls.Config))}
	}
	return nil
}

// startTLSCluster starts a control plane that serves HTTPS with a
// certificate from its own CA, and trusts that CA in client().
func startTLSCluster(t *testing.T, e apptest.Engine, tune func(*config.Config)) *cluster {
	t.Helper()
	return startCluster(t, e, func(cfg *config.Config) {
		cfg.HTTP.TLS.Mode = config.TLSAuto
		if tune != nil {
			tune(cfg)
		}
	})
}

// trustCA makes client() trust m's CA at m's URL.
func trustCA(t *testing.T, m *app.Main) {
	t.Helper()
	if !strings.HasPrefix(m.URL, "https://") {
		return
	}
	cfg, err := tlstrust.Config(m.CA.ChainPEM(), "")
	if err != nil {
		t.Fatal(err)
	}
	trusted.Store(m.URL, cfg)
	t.Cleanup(func() { trusted.Delete(m.URL) })
}

// nodeFile is what the test reads of a node's node.json.
type nodeFile struct {
	NodeID      string `json:"node_id"`
	Key         string `json:"key"`
	Certificate string `json:"certificate"`
	Chain       string `json:"chain"`
	JWT         string `json:"jwt"`
	NATSSeed    string `json:"nats_seed"`
}

func readNodeFile(t *testing.T, dir string) nodeFile {
	t.Helper()
	var f nodeFile
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, "node.json")), &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// asNode calls GET /api/v1/nodes/self with the node's certificate and
// returns the status, 0 when the TLS handshake fails.
func asNode(t *testing.T, c *cluster, f nodeFile) (int, string) {
	t.Helper()
	return asNodeDo(t, c, f, http.MethodGet, "/api/v1/nodes/self", "")
}

// asNodeDo calls the control plane with the node's certificate.
func asNodeDo(t *testing.T, c *cluster, f nodeFile, method, path, body string) (int, string) {
	t.Helper()
	cert, err := tls.X509KeyPair([]byte(f.Certificate+f.Chain), []byte(f.Key))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := tlstrust.Config(c.m.CA.ChainPEM(), "")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Certificates = []tls.Certificate{cert}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	req, err := http.NewRequest(method, c.m.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestNodeRevocationCutsItOff enrolls a real `cove node` process over
// HTTPS, runs a computation on it, revokes the node's certificate through
// the API, and checks that within 5 seconds the node is refused on HTTP
// (mTLS) and NATS, its heartbeats stop, its run fails with node_lost, and
// its NATS JWT replayed on a new connection is refused; on the embedded
// NATS server and on a separately started one in operator mode.
func TestNodeRevocationCutsItOff(t *testing.T) {
	probe := readFile(t, samplestest.MustBuildWasm(t, "probe"))
	for _, deployment := range []struct {
		name string
		tune func(*config.Config)
	}{
		{"embedded NATS", nil},
		{"external NATS", func(cfg *config.Config) { apptest.UseExternalNATS(t, cfg) }},
	} {
		t.Run(deployment.name, func(t *testing.T) { revokeNode(t, probe, deployment.tune) })
	}
}

func revokeNode(t *testing.T, probe []byte, tune func(*config.Config)) {
	e := apptest.Engines()[0]
	ctx := context.Background()
	c := startTLSCluster(t, e, tune)
	if !strings.HasPrefix(c.m.URL, "https://") {
		t.Fatalf("the control plane serves %s, want HTTPS", c.m.URL)
	}
	p, n := c.startNode(t, "suspect", "--ca-fingerprint", c.m.CA.RootFingerprint())
	f := readNodeFile(t, p.dir)
	if f.NodeID != n.ID || n.CertificateSerial == "" || n.NATSUser == "" {
		t.Fatalf("node.json %s, registry %+v", f.NodeID, n)
	}
	if code, body := asNode(t, c, f); code != http.StatusOK || !strings.Contains(body, n.ID) {
		t.Fatalf("the node's own call before revocation: %d %s", code, body)
	}

	l := newLab(t, c.admin)
	alg := l.algorithm(t, "probe", probe)
	_, run := l.run(t, alg, computation.Limits{MaxDurationSeconds: 600}, "sleep", "10m")
	waitRun(t, c.admin, run.ID, time.Minute, "to run", func(r *computation.Run) bool {
		if r.State.Terminal() {
			t.Fatalf("run ended %s %s: %s", r.State, r.Reason, r.Message)
		}
		return r.State == computation.Running
	})

	beats, err := c.m.Bus.Conn().SubscribeSync(natsbus.NodeHeartbeat(n.ID))
	if err != nil {
		t.Fatal(err)
	}
	defer beats.Unsubscribe()
	if _, err := beats.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("no heartbeat before the revocation: %v", err)
	}

	revoked := time.Now()
	if _, err := c.admin.RevokeCertificate(ctx, n.CertificateSerial, "key_compromise"); err != nil {
		t.Fatalf("revoke: %v", err)
	}

	// The run fails with node_lost.
	failed := waitEnd(t, c.admin, run.ID, 5*time.Second)
	if failed.State != computation.Failed || failed.Reason != computation.NodeLost {
		t.Fatalf("run ended %s %s: %s, want failed node_lost", failed.State, failed.Reason, failed.Message)
	}
	t.Logf("run failed %v after the revocation: %s", time.Since(revoked).Round(time.Millisecond), failed.Message)

	// HTTP: the node's certificate is refused.
	if code, body := asNode(t, c, f); code != http.StatusUnauthorized {
		t.Errorf("the node's own call after revocation: %d %s, want 401", code, body)
	}
	// NATS: no heartbeat gets through any more (they come every 2 s).
	for {
		if _, err := beats.NextMsg(0); err != nil {
			break
		}
	}
	if msg, err := beats.NextMsg(3 * time.Second); err == nil {
		t.Errorf("a heartbeat arrived after the revocation: %s", msg.Data)
	}
	if took := time.Since(revoked); took > 5*time.Second+3*time.Second {
		t.Errorf("cutting off took %v", took)
	}
	// The node process gives up: its NATS connection closed for good.
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("the node process still runs 10 s after its certificate was revoked\n%s", p.out.String())
	}
	// Its NATS JWT, replayed on a new connection, is refused.
	nc, err := nats.Connect(c.m.Bus.ClientURL(), nats.UserJWTAndSeed(f.JWT, f.NATSSeed), nats.MaxReconnects(0), nats.Timeout(5*time.Second))
	if err == nil {
		nc.Close()
		t.Error("the revoked node's JWT connected to NATS")
	}
	if got, err := c.admin.GetNode(ctx, n.ID); err != nil || got.State != node.Revoked || got.Online || got.RevokedAt == nil {
		t.Errorf("node after the revocation: %+v %v", got, err)
	}
	// A restart of the node on the same data dir is refused at once.
	p2 := startNodeProc(t, p.dir, p.name, nil)
	select {
	case <-p2.exited:
		if !strings.Contains(p2.out.String(), "revoked") {
			t.Errorf("the restarted node exited without saying it was revoked:\n%s", p2.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("a revoked node started again\n%s", p2.out.String())
	}
}

// TestNodeRenewsItsCertificate gives nodes certificates that last 15 s: the
// node renews at two thirds of that, keeps heartbeating on NATS with the
// new JWT, and takes runs after its first certificate has expired.
func TestNodeRenewsItsCertificate(t *testing.T) {
	probe := readFile(t, samplestest.MustBuildWasm(t, "probe"))
	const ttl = 15 * time.Second
	c := startTLSCluster(t, apptest.Engines()[0], func(cfg *config.Config) { cfg.CA.NodeCertTTL = ttl })
	p, n := c.startNode(t, "renewer", "--ca-fingerprint", c.m.CA.RootFingerprint())
	first := n.CertificateSerial
	var renewed *node.Node
	waitFor(t, 3*ttl, "the node to renew its certificate", func() (bool, error) {
		got, err := c.admin.GetNode(context.Background(), n.ID)
		if err != nil {
			return false, err
		}
		renewed = got
		return got.CertificateSerial != first, nil
	})
	if f := readNodeFile(t, p.dir); !strings.Contains(f.Certificate, "CERTIFICATE") {
		t.Fatalf("node.json lost its certificate: %+v", f)
	}
	// Past the first certificate's expiry the node is still online and
	// runs work.
	time.Sleep(time.Until(n.CertificateExpiresAt.Add(time.Second)))
	waitNode(t, c.admin, p, "online after its first certificate expired", func(x *node.Node) bool { return x.Online && x.State == node.Active })
	l := newLab(t, c.admin)
	alg := l.algorithm(t, "probe", probe)
	_, run := l.run(t, alg, computation.Limits{MaxDurationSeconds: 60}, "exit", "0")
	if end := waitEnd(t, c.admin, run.ID, time.Minute); end.State != computation.Succeeded {
		t.Errorf("run after renewal: %s %s %s", end.State, end.Reason, end.Message)
	}
	// The certificate in node.json works; on a loaded machine it may be a
	// moment from its renewal, so a few tries.
	waitFor(t, 2*ttl, "the node's own call with its renewed certificate", func() (bool, error) {
		code, body := asNode(t, c, readNodeFile(t, p.dir))
		if code != http.StatusOK {
			return false, fmt.Errorf("%d %s", code, body)
		}
		return true, nil
	})
	t.Logf("certificate %s renewed as %s", first, renewed.CertificateSerial)
}

// TestNodeMTLSRefusals presents what a node's own calls must refuse: no
// certificate, a certificate from another CA, an expired node certificate,
// a user certificate of this CA, and a renewal asking for another node's
// name.
func TestNodeMTLSRefusals(t *testing.T) {
	ctx := context.Background()
	const ttl = 3 * time.Second
	c := startTLSCluster(t, apptest.Engines()[0], func(cfg *config.Config) { cfg.CA.NodeCertTTL = ttl })
	good, expires := enrollRaw(t, c)
	if code, body := asNode(t, c, good); code != http.StatusOK {
		t.Fatalf("a fresh node certificate: %d %s", code, body)
	}

	// A renewal that asks for another node's name is refused.
	other := nodetest.NewKeys(t, "node_someoneelse")
	if code, body := asNodeDo(t, c, good, http.MethodPost, "/api/v1/nodes/self/renew", `{"csr":`+jsonString(other.CSR)+`}`); code != http.StatusForbidden {
		t.Errorf("renewal for another name: %d %s, want 403", code, body)
	}
	// A user certificate of this CA is not a node's.
	user, err := c.admin.IssueCertificate(ctx, httpapi.IssueCertificateInput{Kind: "user"})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := asNode(t, c, nodeFile{Key: string(user.KeyPEM), Certificate: string(user.CertPEM), Chain: string(user.ChainPEM)}); code != http.StatusUnauthorized {
		t.Errorf("a user certificate: %d %s, want 401", code, body)
	}
	// A certificate from another CA: the client does not even offer it,
	// since the server asks for certificates of its own CA only.
	stranger := startTLSCluster(t, apptest.Engines()[0], nil)
	srep, _ := enrollRaw(t, stranger)
	if code, body := asNode(t, c, srep); code != 0 && code != http.StatusUnauthorized {
		t.Errorf("another deployment's node certificate: %d %s, want refused", code, body)
	}
	// Expired: refused at the handshake too.
	time.Sleep(time.Until(expires.Add(500 * time.Millisecond)))
	if code, body := asNode(t, c, good); code != 0 && code != http.StatusUnauthorized {
		t.Errorf("an expired node certificate: %d %s, want refused", code, body)
	}
}

// enrollRaw enrolls a node on c through the API, without running one,
// and returns what its node.json would hold and when it expires.
func enrollRaw(t *testing.T, c *cluster) (nodeFile, time.Time) {
	t.Helper()
	ctx := context.Background()
	tok, err := c.admin.CreateEnrollToken(ctx, httpapi.EnrollTokenInput{AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	keys := nodetest.NewKeys(t, "")
	rep, err := client(t, c.m.URL).EnrollNode(ctx, runproto.EnrollRequest{Token: tok.Token, Name: "edge", Drivers: []string{"wasm"},
		Capacity: runproto.Resources{CPUs: 1, MemoryBytes: 1 << 30}, CSR: keys.CSR, NATSUser: keys.NATSUser})
	if err != nil {
		t.Fatal(err)
	}
	return nodeFile{NodeID: rep.NodeID, Key: keys.KeyPEM, Certificate: rep.Certificate, Chain: rep.Chain}, rep.Expires
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestListenerRenewsItsCertificate: with 3 s server certificates, a new
// connection after two thirds of that gets a new one.
func TestListenerRenewsItsCertificate(t *testing.T) {
	c := startTLSCluster(t, apptest.Engines()[0], func(cfg *config.Config) { cfg.CA.ServerCertTTL = 3 * time.Second })
	cfg, err := tlstrust.Config(c.m.CA.ChainPEM(), "")
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", strings.TrimPrefix(c.m.URL, "https://"), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := serial()
	waitFor(t, 10*time.Second, "a renewed listener certificate", func() (bool, error) { return serial() != first, nil })
}
