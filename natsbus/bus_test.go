package natsbus_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/natsbus/natstest"
)

// MustOpen opens an embedded Bus on a random port in dir and closes it when
// the test ends. Streams are kept small so that tests do not depend on how
// much disk the machine has.
func MustOpen(tb testing.TB, dir string) *natsbus.Bus {
	tb.Helper()
	return MustOpenConfig(tb, natsbus.Config{DataDir: dir, Port: natsbus.RandomPort})
}

// MustOpenConfig opens a Bus with cfg, streams kept small, and closes it
// when the test ends.
func MustOpenConfig(tb testing.TB, cfg natsbus.Config) *natsbus.Bus {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg.StreamMaxBytes = 64 << 20
	bus, err := natsbus.Open(ctx, cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := bus.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return bus
}

// forEachDeployment runs test, in parallel, against a Bus on the embedded
// server and one managing a real nats-server process, so that both enforce
// the same permissions. accountSeed is the file of the COVE account's seed.
func forEachDeployment(t *testing.T, test func(t *testing.T, bus *natsbus.Bus, accountSeed string)) {
	t.Parallel()
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		test(t, MustOpen(t, dir), filepath.Join(dir, "keys", "account.nk"))
	})
	t.Run("external", func(t *testing.T) {
		t.Parallel()
		cfg := natstest.StartExternal(t)
		test(t, MustOpenConfig(t, cfg), cfg.AccountSeedFile)
	})
}

// MustEnsureStreams sets up the streams or fails the test.
func MustEnsureStreams(tb testing.TB, bus *natsbus.Bus) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.EnsureStreams(ctx); err != nil {
		tb.Fatalf("EnsureStreams: %v", err)
	}
}

// streamMsgs returns how many messages stream holds.
func streamMsgs(tb testing.TB, bus *natsbus.Bus, stream string) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := bus.JetStream().Stream(ctx, stream)
	if err != nil {
		tb.Fatalf("Stream(%s): %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatalf("Info(%s): %v", stream, err)
	}
	return info.State.Msgs
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOpenEmbedded(t *testing.T) {
	// Not parallel: it counts goroutines.
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	ctx := context.Background()
	bus, err := natsbus.Open(ctx, natsbus.Config{DataDir: dir, Port: natsbus.RandomPort, StreamMaxBytes: 64 << 20})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !bus.Embedded() {
		t.Error("Embedded() = false for an embedded bus")
	}
	if url := bus.ClientURL(); !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":4222") || strings.HasSuffix(url, ":-1") {
		t.Errorf("ClientURL() = %q, want nats://127.0.0.1:<random port>", url)
	}
	if err := bus.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}

	// Core publish/subscribe on the control plane's in-process connection.
	nc := bus.Conn()
	sub, err := nc.SubscribeSync(natsbus.AllNodeHeartbeats)
	if err != nil {
		t.Fatal(err)
	}
	node := cove.NewID("node")
	if err := nc.Publish(natsbus.NodeHeartbeat(node), []byte("alive")); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(2 * time.Second)
	if err != nil {
		t.Fatalf("NextMsg: %v", err)
	}
	if got, _ := natsbus.NodeFromSubject(msg.Subject); got != node || string(msg.Data) != "alive" {
		t.Errorf("got %q on %q, want alive from %s", msg.Data, msg.Subject, node)
	}

	// Streams, twice: a restart or a second replica calls it again.
	MustEnsureStreams(t, bus)
	MustEnsureStreams(t, bus)
	run := cove.NewID("run")
	// Agents' log requests are not stored as they are: the control plane
	// stores what it accepts under RunLogStore.
	for _, subject := range []string{natsbus.RunLogs(run), natsbus.RunLogStore(run), natsbus.RunEvents(run)} {
		if err := nc.Publish(subject, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "stream messages", func() bool {
		return streamMsgs(t, bus, natsbus.StreamRunLogs) == 1 && streamMsgs(t, bus, natsbus.StreamRunEvents) == 1
	})
	s, err := bus.JetStream().Stream(ctx, natsbus.StreamRunLogs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.MaxAge != natsbus.DefaultStreamMaxAge || cfg.MaxBytes != 64<<20 || cfg.Storage != jetstream.FileStorage {
		t.Errorf("RUN_LOGS limits: max age %v, max bytes %d, storage %v", cfg.MaxAge, cfg.MaxBytes, cfg.Storage)
	}

	// The layout README.md promises, with secrets private.
	if fi, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil || !fi.IsDir() {
		t.Errorf("no JetStream store in DataDir/jetstream: %v", err)
	}
	for _, name := range []string{"operator.nk", "system.nk", "account.nk", "account.jwt"} {
		fi, err := os.Stat(filepath.Join(dir, "keys", name))
		if err != nil {
			t.Errorf("key file: %v", err)
			continue
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, perm)
		}
	}

	if err := bus.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := bus.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := bus.Ready(ctx); cove.ErrorCode(err) != cove.Unavailable {
		t.Errorf("Ready after Close = %v, want unavailable", err)
	}

	// A small allowance covers runtime goroutines that come and go.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 {
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("%d goroutines before Open, %d after Close:\n%s", before, runtime.NumGoroutine(), buf.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRestartKeepsCredentialsAndMessages(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	run := cove.NewID("run")

	bus := MustOpen(t, dir)
	MustEnsureStreams(t, bus)
	for range 3 {
		if err := bus.Conn().Publish(natsbus.RunLogStore(run), []byte("line")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "3 logs stored", func() bool { return streamMsgs(t, bus, natsbus.StreamRunLogs) == 3 })
	kept := MustIssueRun(t, bus, run)
	revoked := MustIssueRun(t, bus, run)
	if err := bus.RevokeUser(revoked.PublicKey); err != nil {
		t.Fatalf("RevokeUser: %v", err)
	}
	if err := bus.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	bus = MustOpen(t, dir)
	MustEnsureStreams(t, bus)
	if n := streamMsgs(t, bus, natsbus.StreamRunLogs); n != 3 {
		t.Errorf("RUN_LOGS holds %d messages after restart, want 3", n)
	}
	agent := MustConnect(t, bus, kept, natsbus.RunInboxPrefix(run))
	if err := agent.Publish(natsbus.RunEvents(run), []byte("after restart")); err != nil {
		t.Fatal(err)
	}
	agent.Flush()
	waitFor(t, 5*time.Second, "event published after restart", func() bool { return streamMsgs(t, bus, natsbus.StreamRunEvents) == 1 })
	if _, err := connect(bus, revoked, natsbus.RunInboxPrefix(run)); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("revoked credential after restart: connect error %v, want %v", err, nats.ErrAuthorization)
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  natsbus.Config
	}{
		{"embedded without data dir", natsbus.Config{Port: natsbus.RandomPort}},
		{"embedded with creds file", natsbus.Config{DataDir: t.TempDir(), Port: natsbus.RandomPort, CredsFile: "x.creds"}},
		{"embedded with account seed", natsbus.Config{DataDir: t.TempDir(), Port: natsbus.RandomPort, AccountSeedFile: "a.nk"}},
		{"port out of range", natsbus.Config{DataDir: t.TempDir(), Port: 70000}},
		{"negative max age", natsbus.Config{DataDir: t.TempDir(), Port: natsbus.RandomPort, StreamMaxAge: -time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus, err := natsbus.Open(context.Background(), tt.cfg)
			if err == nil {
				bus.Close()
			}
			if cove.ErrorCode(err) != cove.Invalid {
				t.Errorf("Open error %v, want invalid", err)
			}
		})
	}
}

func TestOpenFailsFastWhenPortTaken(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	bus, err := natsbus.Open(context.Background(), natsbus.Config{
		DataDir: t.TempDir(),
		Port:    l.Addr().(*net.TCPAddr).Port,
	})
	if err == nil {
		bus.Close()
		t.Fatal("Open succeeded on a port in use")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Open took %v to notice the port is in use", d)
	}
}

func TestCorruptSavedAccountStopsStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bus := MustOpen(t, dir)
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
	// Forgetting revocations silently would be worse than not starting.
	if err := os.WriteFile(filepath.Join(dir, "keys", "account.jwt"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	bus, err := natsbus.Open(context.Background(), natsbus.Config{DataDir: dir, Port: natsbus.RandomPort})
	if err == nil {
		bus.Close()
		t.Fatal("Open accepted a corrupt saved account")
	}
}

// TestExternal runs a Bus against another Bus's server as if it were an
// external deployment: a creds file for the control plane and the account
// seed for issuing.
func TestExternal(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	server := MustOpen(t, dir)
	MustEnsureStreams(t, server)

	seedFile := filepath.Join(dir, "keys", "account.nk")
	account := readKey(t, seedFile)
	creds := writeCreds(t, signUser(t, account, "", func(*jwt.UserClaims) {}))

	ctx := context.Background()
	bus, err := natsbus.Open(ctx, natsbus.Config{URL: server.ClientURL(), CredsFile: creds, AccountSeedFile: seedFile})
	if err != nil {
		t.Fatalf("Open external: %v", err)
	}
	t.Cleanup(func() { bus.Close() })
	if bus.Embedded() {
		t.Error("Embedded() = true for an external bus")
	}
	if bus.ClientURL() != server.ClientURL() {
		t.Errorf("ClientURL() = %q, want %q", bus.ClientURL(), server.ClientURL())
	}
	if err := bus.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	MustEnsureStreams(t, bus)

	// A credential issued by the external bus works against that server.
	run := cove.NewID("run")
	sub, err := bus.Conn().SubscribeSync(natsbus.AllRunHeartbeats)
	if err != nil {
		t.Fatal(err)
	}
	bus.Conn().Flush()
	agent := MustConnect(t, bus, MustIssueRun(t, bus, run), natsbus.RunInboxPrefix(run))
	if err := agent.Publish(natsbus.RunHeartbeat(run), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(2 * time.Second); err != nil {
		t.Errorf("heartbeat from an agent of the external bus: %v", err)
	}
	if err := bus.RevokeUser(agent.cred.PublicKey); cove.ErrorCode(err) != cove.Unavailable {
		t.Errorf("RevokeUser on external NATS = %v, want unavailable", err)
	}

	t.Run("without account seed", func(t *testing.T) {
		bus, err := natsbus.Open(ctx, natsbus.Config{URL: server.ClientURL(), CredsFile: creds})
		if err != nil {
			t.Fatalf("Open external: %v", err)
		}
		defer bus.Close()
		_, err = bus.IssueRunCredential(run, time.Now().Add(time.Hour))
		if cove.ErrorCode(err) != cove.Unavailable || !strings.Contains(cove.ErrorMessage(err), "account seed") {
			t.Errorf("Issue without account seed = %v, want unavailable naming the account seed", err)
		}
	})
	t.Run("seed of another account", func(t *testing.T) {
		other, _ := nkeys.CreateAccount()
		seed, _ := other.Seed()
		path := filepath.Join(t.TempDir(), "other.nk")
		if err := os.WriteFile(path, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		bus, err := natsbus.Open(ctx, natsbus.Config{URL: server.ClientURL(), CredsFile: creds, AccountSeedFile: path})
		if err == nil {
			bus.Close()
		}
		if cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("Open with a foreign account seed = %v, want invalid", err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "nats://" + l.Addr().String()
		l.Close() // nothing listens there now
		bus, err := natsbus.Open(ctx, natsbus.Config{URL: url})
		if err == nil {
			bus.Close()
		}
		if cove.ErrorCode(err) != cove.Unavailable {
			t.Errorf("Open on a dead URL = %v, want unavailable", err)
		}
	})
}

// BenchmarkPublishSubscribe measures messages per second through the
// embedded server: the control plane's in-process connection to itself, and
// an agent over TCP to the control plane.
func BenchmarkPublishSubscribe(b *testing.B) {
	bus := MustOpen(b, b.TempDir())
	payload := bytes.Repeat([]byte("x"), 128)
	run := cove.NewID("run")

	bench := func(b *testing.B, pub *nats.Conn) {
		var got atomic.Int64
		done := make(chan struct{})
		n := int64(b.N)
		sub, err := bus.Conn().Subscribe(natsbus.RunLogs(run), func(*nats.Msg) {
			if got.Add(1) == n {
				close(done)
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Unsubscribe()
		// A slow subscriber must not drop messages, or done never closes.
		sub.SetPendingLimits(-1, -1)
		bus.Conn().Flush()
		b.SetBytes(int64(len(payload)))
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			if err := pub.Publish(natsbus.RunLogs(run), payload); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-done:
		case <-time.After(time.Minute):
			b.Fatalf("received %d of %d messages", got.Load(), n)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	}
	b.Run("inprocess", func(b *testing.B) { bench(b, bus.Conn()) })
	b.Run("tcp_agent", func(b *testing.B) {
		agent := MustConnect(b, bus, MustIssueRun(b, bus, run), natsbus.RunInboxPrefix(run))
		bench(b, agent.Conn)
	})
}
