// Package natsbus owns Cove's NATS: it runs the embedded server or connects
// to an external one, names every subject, sets up the JetStream streams and
// issues the user credentials that nodes and agents connect with.
//
// The rest of Cove receives a *nats.Conn and a jetstream.JetStream from a Bus
// and cannot tell which kind of server is behind them. README.md next to this
// file documents the subjects, the permissions and the streams.
package natsbus

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/covecompute/cove"
)

// Defaults of Config.
const (
	DefaultHost           = "127.0.0.1"
	DefaultPort           = 7422 // not 4222, so a dev control plane does not clash with a local nats-server
	DefaultStreamMaxAge   = 7 * 24 * time.Hour
	DefaultStreamMaxBytes = 1 << 30
)

// RandomPort asks the embedded server for any free port, for tests.
const RandomPort = -1

// Config selects and configures the NATS behind a Bus.
//
// Three deployments are supported. Embedded (URL empty): an operator-mode
// server inside this process whose operator, system account and COVE account
// are generated at first start and kept in DataDir; the Bus issues, and can
// revoke, node and agent credentials. Managed external (URL and
// OperatorSeedFile set): an operator-mode nats-server with a full account
// resolver, prepared by InitExternal; the Bus signs the COVE account with
// the operator key and pushes it through the system account at start and at
// every revocation, so it enforces exactly what the embedded server does.
// Unmanaged external (URL set, no OperatorSeedFile): the Bus connects with
// CredsFile and issues credentials signed with the seed in AccountSeedFile;
// the account itself, its JetStream limits and revocations, is managed on
// that deployment (for example with nsc), so RevokeUser reports Unavailable
// there.
type Config struct {
	// URL of an external NATS server or cluster, comma separated. Empty runs
	// the embedded server.
	URL string
	// CredsFile is the control plane's user credentials on the external NATS.
	// Empty connects without authentication, or, when managed, as a user the
	// Bus signs itself with the account key.
	CredsFile string
	// AccountSeedFile holds the seed of the external account that node and
	// agent users belong to. Without it the Issue methods report Unavailable.
	// Required when managed.
	AccountSeedFile string
	// OperatorSeedFile holds the seed of the operator the external server
	// trusts. Setting it makes the Bus manage the COVE account: it signs the
	// account and pushes it with the user in SystemCredsFile.
	OperatorSeedFile string
	// SystemCredsFile is a user of the external server's system account,
	// which may push account JWTs. Required when managed.
	SystemCredsFile string

	// DataDir holds the embedded server's state: the JetStream store in
	// DataDir/jetstream and the operator and account keys in DataDir/keys.
	// Required when embedded.
	DataDir string
	// Host the embedded server listens on for nodes and agents. Default
	// DefaultHost, so nothing outside the machine can connect unless asked.
	Host string
	// Port of that listener. 0 means DefaultPort, RandomPort any free port.
	Port int

	// AdvertiseURL is the URL nodes and agents dial, when it differs from
	// where the control plane connects (a public name, a listener on 0.0.0.0).
	AdvertiseURL string

	// StreamMaxAge is how long RUN_LOGS and RUN_EVENTS keep a message.
	// Default DefaultStreamMaxAge.
	StreamMaxAge time.Duration
	// StreamMaxBytes caps the size of each stream; the oldest messages go
	// first. Default DefaultStreamMaxBytes.
	StreamMaxBytes int64
	// StreamReplicas of each stream: 1 (default) embedded, 3 on a cluster.
	StreamReplicas int

	// Logger receives the embedded server's log and connection events.
	// Nil discards them.
	Logger *slog.Logger
}

// withDefaults returns c with defaults filled in, or an Invalid error naming
// the first setting that cannot work, so a typo fails at start and not when
// the first node connects.
func (c Config) withDefaults() (Config, error) {
	if c.URL == "" {
		if c.DataDir == "" {
			return c, cove.Errorf(cove.Invalid, "NATS data directory is required for the embedded server")
		}
		if c.CredsFile != "" || c.AccountSeedFile != "" || c.OperatorSeedFile != "" || c.SystemCredsFile != "" {
			return c, cove.Errorf(cove.Invalid, "NATS creds, account seed, operator seed and system creds files apply only to an external NATS URL")
		}
	}
	if c.OperatorSeedFile != "" && (c.SystemCredsFile == "" || c.AccountSeedFile == "") {
		return c, cove.Errorf(cove.Invalid, "managing the external NATS account (an operator seed file) needs the system creds file and the account seed file too")
	}
	if c.SystemCredsFile != "" && c.OperatorSeedFile == "" {
		return c, cove.Errorf(cove.Invalid, "the NATS system creds file is used only with the operator seed file, to push the account")
	}
	if c.Host == "" {
		c.Host = DefaultHost
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Port < RandomPort || c.Port > 65535 {
		return c, cove.Errorf(cove.Invalid, "NATS port %d is out of range", c.Port)
	}
	if c.StreamMaxAge == 0 {
		c.StreamMaxAge = DefaultStreamMaxAge
	}
	if c.StreamMaxBytes == 0 {
		c.StreamMaxBytes = DefaultStreamMaxBytes
	}
	if c.StreamReplicas == 0 {
		c.StreamReplicas = 1
	}
	if c.StreamMaxAge < 0 || c.StreamMaxBytes < 0 || c.StreamReplicas < 0 {
		return c, cove.Errorf(cove.Invalid, "NATS stream limits may not be negative")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Bus is Cove's connection to NATS and, when embedded, the server itself.
// It is safe for concurrent use.
type Bus struct {
	cfg Config
	log *slog.Logger

	nc     *nats.Conn
	js     jetstream.JetStream
	url    string        // what nodes and agents dial
	closed chan struct{} // closed when nc has closed

	// account signs node and agent users; nil when external without a seed.
	account nkeys.KeyPair

	// Embedded only.
	srv *server.Server
	acc *accountState

	// Managed external only.
	pushed *pushedAccount

	closeOnce sync.Once
	closeErr  error
}

// Open starts the embedded NATS server or connects to the external one, and
// returns once the control plane's connection is up. Errors are Invalid for
// a bad Config, Unavailable when the external server cannot be reached, and
// Internal otherwise.
func Open(ctx context.Context, cfg Config) (*Bus, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, &cove.Error{Code: cove.Unavailable, Message: "NATS start was cancelled", Err: err}
	}
	b := &Bus{cfg: cfg, log: cfg.Logger, closed: make(chan struct{})}
	if cfg.URL == "" {
		err = b.openEmbedded(ctx)
	} else {
		err = b.openExternal(ctx)
	}
	if err != nil {
		b.Close()
		return nil, err
	}
	// New fails only on invalid options, and it is given none.
	if b.js, err = jetstream.New(b.nc); err != nil {
		b.Close()
		return nil, cove.Wrap(err, "cannot use JetStream")
	}
	if b.pushed != nil {
		b.pushed.setJetStream(b.js, cfg.StreamReplicas)
	}
	return b, nil
}

func (b *Bus) openExternal(ctx context.Context) error {
	opts := b.connOptions("cove control plane")
	opts = append(opts, nats.MaxReconnects(-1)) // ride out cluster restarts; Ready reports the gap
	if b.cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(b.cfg.CredsFile))
	}
	if b.cfg.AccountSeedFile != "" {
		kp, err := readAccountSeed(b.cfg.AccountSeedFile, b.cfg.CredsFile)
		if err != nil {
			return err
		}
		b.account = kp
	}
	if b.cfg.OperatorSeedFile != "" {
		// The account must be on the server before any of its users,
		// the control plane's own included, can connect.
		if err := b.openManaged(ctx); err != nil {
			return err
		}
		if b.cfg.CredsFile == "" {
			opt, err := b.selfSignedUser()
			if err != nil {
				return err
			}
			opts = append(opts, opt)
		}
	}
	nc, err := nats.Connect(b.cfg.URL, opts...)
	if err != nil {
		return &cove.Error{Code: cove.Unavailable, Message: "cannot connect to NATS", Err: err}
	}
	b.nc = nc
	b.url = b.cfg.URL
	if b.cfg.AdvertiseURL != "" {
		b.url = b.cfg.AdvertiseURL
	}
	return nil
}

// connOptions are the options of the control plane's own connection: its
// name shows in server monitoring, and its events go to the log.
func (b *Bus) connOptions(name string) []nats.Option {
	return []nats.Option{
		nats.Name(name),
		nats.ClosedHandler(func(*nats.Conn) { close(b.closed) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			b.log.Error("NATS error", "subject", subject, "err", err)
		}),
	}
}

// Conn returns the control plane's connection. It has every permission in
// the COVE account; hand nodes and agents a Credential instead.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream returns JetStream on the control plane's connection.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// ClientURL returns the URL nodes and agents dial.
func (b *Bus) ClientURL() string { return b.url }

// Embedded reports whether the server runs inside this process.
func (b *Bus) Embedded() bool { return b.srv != nil }

// Ready reports whether the connection is up and JetStream answers, for
// /readyz. It returns Unavailable when not.
func (b *Bus) Ready(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return cove.Errorf(cove.Unavailable, "NATS is not connected")
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return &cove.Error{Code: cove.Unavailable, Message: "JetStream is not answering", Err: err}
	}
	return nil
}

// closeTimeout bounds how long Close waits for in-flight messages to drain,
// so a wedged subscriber cannot hold up shutdown for nats.go's default 30 s.
const closeTimeout = 10 * time.Second

// Close drains the connection, so handlers finish the messages they hold,
// then shuts the embedded server down and waits for it. It is safe to call
// more than once.
func (b *Bus) Close() error {
	b.closeOnce.Do(func() {
		if b.nc != nil {
			if err := b.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				b.closeErr = cove.Wrap(err, "cannot drain NATS connection")
				b.nc.Close()
			}
			select {
			case <-b.closed:
			case <-time.After(closeTimeout):
				b.nc.Close()
				<-b.closed
			}
		}
		if b.srv != nil {
			// nats-server stops JetStream before it closes client
			// connections, so what a node or agent publishes in between is
			// accepted and lost. Disconnect them first: their clients keep
			// unsent messages and resend them to the next server.
			if cz, err := b.srv.Connz(&server.ConnzOptions{Limit: math.MaxInt32}); err == nil {
				for _, c := range cz.Conns {
					_ = b.srv.DisconnectClientByID(c.Cid)
				}
			}
			b.srv.Shutdown()
			b.srv.WaitForShutdown()
		}
		if b.pushed != nil {
			b.pushed.close()
		}
		if b.account != nil {
			b.account.Wipe()
		}
		if b.acc != nil {
			b.acc.operator.Wipe()
		}
	})
	return b.closeErr
}

// hostPort joins a host and port for a URL, bracketing IPv6 hosts.
func hostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}
