package natsbus_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/natsbus/natstest"
)

// TestManagedExternalRestarts checks what the control plane keeps across
// its own restarts and the NATS server's: streams, revocations, and its
// connection.
func TestManagedExternalRestarts(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	cfg := srv.Deployment.Config()
	bus := MustOpenConfig(t, cfg)
	if bus.Embedded() || bus.ClientURL() != cfg.URL {
		t.Errorf("Embedded() = %v, ClientURL() = %q, want false, %q", bus.Embedded(), bus.ClientURL(), cfg.URL)
	}
	ctx := context.Background()
	if err := bus.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	MustEnsureStreams(t, bus)
	MustEnsureStreams(t, bus)
	for _, name := range []string{natsbus.StreamRunLogs, natsbus.StreamRunEvents} {
		s, err := bus.JetStream().Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s on the external server: %v", name, err)
		}
		if c := s.CachedInfo().Config; c.MaxBytes != 64<<20 || c.MaxAge != natsbus.DefaultStreamMaxAge {
			t.Errorf("%s limits: %d bytes, %v", name, c.MaxBytes, c.MaxAge)
		}
	}

	run := cove.NewID("run")
	kept := MustIssueRun(t, bus, run)
	revoked := MustIssueRun(t, bus, run)
	if err := bus.RevokeUser(revoked.PublicKey); err != nil {
		t.Fatalf("RevokeUser: %v", err)
	}

	// A control plane restart finds the account as it would push it and
	// leaves it alone, so it cannot race another replica's revocation: the
	// server's revocations survive it, and credentials of the last one
	// still work.
	accountPub, _ := readKey(t, cfg.AccountSeedFile).PublicKey()
	accountJWT := filepath.Join(srv.Deployment.Dir, "jwt", accountPub+".jwt")
	before := readFile(t, accountJWT)
	// The same claims signed in the same second make the same JWT, so a
	// push within the second would go unnoticed.
	time.Sleep(1100 * time.Millisecond)
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
	bus = MustOpenConfig(t, cfg)
	if after := readFile(t, accountJWT); string(after) != string(before) {
		t.Error("a control plane restart pushed an unchanged account again")
	}
	if _, err := connect(bus, revoked, natsbus.RunInboxPrefix(run)); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("revoked credential after a control plane restart: %v, want %v", err, nats.ErrAuthorization)
	}
	agent := MustConnect(t, bus, kept, natsbus.RunInboxPrefix(run))
	if err := agent.Publish(natsbus.RunEvents(run), []byte("before")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "event stored", func() bool { return streamMsgs(t, bus, natsbus.StreamRunEvents) == 1 })

	// A server restart: the control plane reconnects by itself and its
	// subscriptions come back; the revocations are on the server's disk.
	beats, err := bus.Conn().SubscribeSync(natsbus.AllRunHeartbeats)
	if err != nil {
		t.Fatal(err)
	}
	bus.Conn().Flush()
	srv.Stop()
	waitFor(t, 5*time.Second, "the control plane to notice", func() bool { return bus.Ready(ctx) != nil })
	srv.Restart()
	waitFor(t, 20*time.Second, "the control plane to reconnect", func() bool { return bus.Ready(ctx) == nil })
	if n := streamMsgs(t, bus, natsbus.StreamRunEvents); n != 1 {
		t.Errorf("RUN_EVENTS holds %d messages after the server restart, want 1", n)
	}
	if _, err := connect(bus, revoked, natsbus.RunInboxPrefix(run)); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("revoked credential after a server restart: %v, want %v", err, nats.ErrAuthorization)
	}
	agent = MustConnect(t, bus, kept, natsbus.RunInboxPrefix(run))
	if err := agent.Publish(natsbus.RunHeartbeat(run), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := beats.NextMsg(5 * time.Second); err != nil {
		t.Errorf("heartbeat after the server restart: %v", err)
	}
	// Revoking still works: the system user reconnected too.
	start := time.Now()
	if err := bus.RevokeUser(kept.PublicKey); err != nil {
		t.Fatalf("RevokeUser after the server restart: %v", err)
	}
	pushed := time.Since(start)
	agent.WantClosed(t, 5*time.Second, nats.ErrAuthRevoked)
	t.Logf("RevokeUser returned after %v, the connection was closed after %v", pushed, time.Since(start))
}

// TestManagedExternalCredsFile runs the control plane as a user from a creds
// file instead of one it signs itself.
func TestManagedExternalCredsFile(t *testing.T) {
	t.Parallel()
	cfg := natstest.StartExternal(t)
	cfg.CredsFile = writeCreds(t, signUser(t, readKey(t, cfg.AccountSeedFile), "", func(*jwt.UserClaims) {}))
	bus := MustOpenConfig(t, cfg)
	MustEnsureStreams(t, bus)
	run := cove.NewID("run")
	sub, err := bus.Conn().SubscribeSync(natsbus.RunHeartbeat(run))
	if err != nil {
		t.Fatal(err)
	}
	bus.Conn().Flush()
	agent := MustConnect(t, bus, MustIssueRun(t, bus, run), natsbus.RunInboxPrefix(run))
	if err := agent.Publish(natsbus.RunHeartbeat(run), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(2 * time.Second); err != nil {
		t.Errorf("heartbeat: %v", err)
	}
}

func TestManagedExternalRejects(t *testing.T) {
	t.Parallel()
	cfg := natstest.StartExternal(t)
	// Once pushed, the COVE account has users: one serves as a user of the
	// wrong account below.
	bus := MustOpenConfig(t, cfg)
	coveUser := writeCreds(t, MustIssueNode(t, bus, cove.NewID("node")))
	covePlane := writeCreds(t, signUser(t, readKey(t, cfg.AccountSeedFile), "", func(*jwt.UserClaims) {}))
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	otherOp, _ := nkeys.CreateOperator()
	otherOpSeed, _ := otherOp.Seed()
	accSeed, _ := os.ReadFile(cfg.AccountSeedFile)

	tests := []struct {
		name string
		edit func(*natsbus.Config)
		code cove.Code
		want string // in the message
	}{
		{"operator the server does not trust", func(c *natsbus.Config) { c.OperatorSeedFile = write("other.nk", otherOpSeed) }, cove.Invalid, "does not trust the operator"},
		{"account seed as operator seed", func(c *natsbus.Config) { c.OperatorSeedFile = write("acc.nk", accSeed) }, cove.Invalid, "wrong kind of key"},
		{"missing operator seed", func(c *natsbus.Config) { c.OperatorSeedFile = filepath.Join(dir, "none.nk") }, cove.Invalid, "operator seed file"},
		{"node creds as system creds", func(c *natsbus.Config) { c.SystemCredsFile = coveUser }, cove.Invalid, "system account"},
		{"control plane creds as system creds", func(c *natsbus.Config) { c.SystemCredsFile = covePlane }, cove.Invalid, "system account"},
		{"missing system creds", func(c *natsbus.Config) { c.SystemCredsFile = filepath.Join(dir, "none.creds") }, cove.Invalid, "system creds file"},
		{"no system creds", func(c *natsbus.Config) { c.SystemCredsFile = "" }, cove.Invalid, "system creds"},
		{"no account seed", func(c *natsbus.Config) { c.AccountSeedFile = "" }, cove.Invalid, "account seed"},
		{"system creds without operator seed", func(c *natsbus.Config) { c.OperatorSeedFile = "" }, cove.Invalid, "operator seed"},
		{"no URL", func(c *natsbus.Config) { c.URL = ""; c.DataDir = dir }, cove.Invalid, "external NATS URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			tt.edit(&c)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			bus, err := natsbus.Open(ctx, c)
			if err == nil {
				bus.Close()
			}
			if cove.ErrorCode(err) != tt.code || !strings.Contains(cove.ErrorMessage(err), tt.want) {
				t.Errorf("Open = %v, want %s naming %q", err, tt.code, tt.want)
			}
		})
	}
}

func TestInitExternal(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "nats")
	d, err := natsbus.InitExternal(dir, "0.0.0.0:14222")
	if err != nil {
		t.Fatalf("InitExternal: %v", err)
	}
	if d.URL != "nats://127.0.0.1:14222" || d.Dir != dir {
		t.Errorf("URL %q dir %q", d.URL, d.Dir)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v %v, want mode 0700", fi.Mode(), err)
	}
	for _, name := range []string{natsbus.DeployOperatorSeed, natsbus.DeploySystemCreds, natsbus.DeployAccountSeed, natsbus.DeployOperatorJWT, natsbus.DeployServerConfig} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, want mode 0600", name, err)
		}
	}
	conf := string(readFile(t, d.ServerConfig))
	for _, want := range []string{`listen: "0.0.0.0:14222"`, "type: full", "allow_delete: false", "resolver_preload", "system_account: A", filepath.Join(dir, "jetstream")} {
		if !strings.Contains(conf, want) {
			t.Errorf("nats-server.conf lacks %q:\n%s", want, conf)
		}
	}
	// The operator JWT names the system account the configuration preloads.
	oc, err := jwt.DecodeOperatorClaims(strings.TrimSpace(string(readFile(t, filepath.Join(dir, natsbus.DeployOperatorJWT)))))
	if err != nil || !strings.Contains(conf, "system_account: "+oc.SystemAccount) {
		t.Errorf("operator JWT: %+v %v", oc, err)
	}

	if _, err := natsbus.InitExternal(dir, "127.0.0.1:14222"); cove.ErrorCode(err) != cove.Conflict {
		t.Errorf("InitExternal over a deployment = %v, want conflict", err)
	}
	for _, listen := range []string{"", "nohost", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:x"} {
		if _, err := natsbus.InitExternal(t.TempDir(), listen); cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("InitExternal listening on %q = %v, want invalid", listen, err)
		}
	}
}

func readFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestManagedExternalReplicasRevoke revokes from two control plane
// replicas at once: neither push may undo the other's revocations.
func TestManagedExternalReplicasRevoke(t *testing.T) {
	t.Parallel()
	cfg := natstest.StartExternal(t)
	replicas := []*natsbus.Bus{MustOpenConfig(t, cfg), MustOpenConfig(t, cfg)}
	node := cove.NewID("node")
	var creds []natsbus.Credential
	for range 12 {
		creds = append(creds, MustIssueNode(t, replicas[0], node))
	}
	errs := make(chan error, len(creds))
	for i, cred := range creds {
		go func() { errs <- replicas[i%2].RevokeUser(cred.PublicKey) }()
	}
	for range creds {
		if err := <-errs; err != nil {
			t.Errorf("RevokeUser: %v", err)
		}
	}
	for i, cred := range creds {
		if c, err := connect(replicas[0], cred, natsbus.NodeInboxPrefix(node)); !errors.Is(err, nats.ErrAuthorization) {
			if c != nil {
				c.Close()
			}
			t.Errorf("credential %d revoked by replica %d: connect error %v, want %v", i, i%2, err, nats.ErrAuthorization)
		}
	}
}
