package natsbus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/covecompute/cove"
)

// The embedded server runs in operator mode, the same trust model as a
// production NATS deployment: an operator key signs the accounts, the COVE
// account key signs users, and the server trusts only the operator. That is
// what lets the Bus hand out scoped, expiring user JWTs without the server
// knowing any user in advance.

// Files in DataDir/keys. Seeds are secrets: 0600 in a 0700 directory.
const (
	keyDirName      = "keys"
	operatorKeyFile = "operator.nk"
	systemKeyFile   = "system.nk"
	accountKeyFile  = "account.nk"
	// accountJWTFile holds the last signed COVE account, so revocations
	// survive a restart; the rest of the account is rebuilt at each start.
	accountJWTFile = "account.jwt"
)

// accountName is the name of the embedded account all of Cove lives in.
const accountName = "COVE"

// defaultStartTimeout bounds how long Open waits for the embedded server when
// ctx has no deadline; recovering a large JetStream store takes a while.
const defaultStartTimeout = 30 * time.Second

// accountState is what the embedded server needs to re-sign the COVE account
// when a user is revoked.
type accountState struct {
	mu       sync.Mutex // serializes account updates
	operator nkeys.KeyPair
	pub      string // the COVE account's public key
	resolver *server.MemAccResolver
	path     string // accountJWTFile
	revoked  jwt.RevocationList
}

func (b *Bus) openEmbedded(ctx context.Context) error {
	keyDir := filepath.Join(b.cfg.DataDir, keyDirName)
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		return cove.Wrap(err, "cannot create the NATS key directory")
	}
	operator, err := loadOrCreateKey(filepath.Join(keyDir, operatorKeyFile), nkeys.PrefixByteOperator)
	if err != nil {
		return err
	}
	system, err := loadOrCreateKey(filepath.Join(keyDir, systemKeyFile), nkeys.PrefixByteAccount)
	if err != nil {
		operator.Wipe()
		return err
	}
	defer system.Wipe() // only its public key is needed once it exists
	account, err := loadOrCreateKey(filepath.Join(keyDir, accountKeyFile), nkeys.PrefixByteAccount)
	if err != nil {
		operator.Wipe()
		return err
	}
	b.account = account
	opPub, _ := operator.PublicKey() // a pair made from a checked seed always has one
	sysPub, _ := system.PublicKey()
	accPub, _ := account.PublicKey()

	b.acc = &accountState{
		operator: operator,
		pub:      accPub,
		resolver: &server.MemAccResolver{},
		path:     filepath.Join(keyDir, accountJWTFile),
	}
	if b.acc.revoked, err = loadRevocations(b.acc.path, accPub, opPub); err != nil {
		return err
	}

	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "cove"
	oc.SystemAccount = sysPub
	if _, err := oc.Encode(operator); err != nil { // sets the issuer the server checks
		return cove.Wrap(err, "cannot sign the NATS operator")
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sysJWT, err := sc.Encode(operator)
	if err != nil {
		return cove.Wrap(err, "cannot sign the NATS system account")
	}
	b.acc.resolver.Store(sysPub, sysJWT)
	if err := b.acc.push(nil); err != nil {
		return err
	}

	log := serverLog{l: b.log.With("component", "nats-server"), fatal: make(chan string, 1)}
	srv, err := server.NewServer(&server.Options{
		ServerName:             "cove",
		Host:                   b.cfg.Host,
		Port:                   b.cfg.Port,
		JetStream:              true,
		StoreDir:               b.cfg.DataDir, // the server adds "jetstream"
		TrustedOperators:       []*jwt.OperatorClaims{oc},
		AccountResolver:        b.acc.resolver,
		SystemAccount:          sysPub,
		NoSigs:                 true, // signals belong to main
		DisableJetStreamBanner: true,
	})
	if err != nil {
		return cove.Wrap(err, "cannot configure the embedded NATS server")
	}
	srv.SetLoggerV2(log, b.log.Enabled(ctx, slog.LevelDebug), false, false)
	b.srv = srv
	srv.Start()
	if err := waitReady(ctx, srv, log.fatal); err != nil {
		return err
	}

	port := b.cfg.Port
	if addr, ok := srv.Addr().(*net.TCPAddr); ok {
		port = addr.Port // the one picked for RandomPort
	}
	b.url = "nats://" + hostPort(b.cfg.Host, port)
	if b.cfg.AdvertiseURL != "" {
		b.url = b.cfg.AdvertiseURL
	}
	return b.connectInProcess()
}

// waitReady waits until srv accepts clients, returning early with the
// server's own words when it gives up (a port in use, say) instead of
// waiting out the whole timeout.
func waitReady(ctx context.Context, srv *server.Server, fatal <-chan string) error {
	deadline := time.Now().Add(defaultStartTimeout)
	if d, ok := ctx.Deadline(); ok {
		deadline = d
	}
	for !srv.ReadyForConnections(50 * time.Millisecond) {
		select {
		case msg := <-fatal:
			return cove.Wrap(errors.New(msg), "the embedded NATS server failed to start")
		case <-ctx.Done():
			return &cove.Error{Code: cove.Unavailable, Message: "the embedded NATS server did not start in time", Err: ctx.Err()}
		default:
		}
		if time.Now().After(deadline) {
			return cove.Errorf(cove.Unavailable, "the embedded NATS server did not start in time")
		}
	}
	return nil
}

// connectInProcess connects the control plane without a socket. Its user
// has every permission of the account, so its JWT allows only in-process
// connections: a copy of it is useless over TCP. A fresh user per start
// keeps it out of DataDir altogether.
func (b *Bus) connectInProcess() error {
	token, seed, err := b.controlPlaneUser(func(uc *jwt.UserClaims) {
		uc.AllowedConnectionTypes.Add(jwt.ConnectionTypeInProcess)
	})
	if err != nil {
		return err
	}
	opts := append(b.connOptions("cove control plane"),
		nats.InProcessServer(b.srv),
		nats.UserJWTAndSeed(token, seed),
	)
	if b.nc, err = nats.Connect(b.srv.ClientURL(), opts...); err != nil {
		return cove.Wrap(err, "cannot connect to the embedded NATS server")
	}
	return nil
}

// controlPlaneUser signs a new user with every permission of the account,
// restricted further by edit, and returns its JWT and seed. The user lives
// only in this process's memory.
func (b *Bus) controlPlaneUser(edit func(*jwt.UserClaims)) (token, seed string, err error) {
	user, err := nkeys.CreateUser()
	if err != nil {
		return "", "", cove.Wrap(err, "cannot create the control plane's NATS user")
	}
	defer user.Wipe()
	pub, _ := user.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = "cove control plane"
	edit(uc)
	if token, err = uc.Encode(b.account); err != nil {
		return "", "", cove.Wrap(err, "cannot sign the control plane's NATS user")
	}
	s, _ := user.Seed()
	return token, string(s), nil
}

// push signs the COVE account with revoked added to its revocations, saves
// it and hands it to the resolver and, once running, the server, which
// closes the connections of any newly revoked user.
func (a *accountState) push(srv *server.Server, revoked ...string) error {
	list := maps.Clone(a.revoked)
	if list == nil {
		list = jwt.RevocationList{}
	}
	now := time.Now()
	for _, pub := range revoked {
		// A revocation covers JWTs issued up to and including its second.
		list.Revoke(pub, now)
	}
	ac := accountClaims(a.pub, list)
	token, err := ac.Encode(a.operator)
	if err != nil {
		return cove.Wrap(err, "cannot sign the NATS account")
	}
	// Saved before it takes effect, so a crash can't forget a revocation
	// the server already acted on.
	if err := writeFileAtomic(a.path, []byte(token+"\n")); err != nil {
		return cove.Wrap(err, "cannot save the NATS account")
	}
	a.resolver.Store(a.pub, token)
	a.revoked = list
	if srv == nil {
		return nil
	}
	acc, err := srv.LookupAccount(a.pub)
	if err != nil {
		return cove.Wrap(err, "cannot find the NATS account")
	}
	srv.UpdateAccountClaims(acc, ac)
	return nil
}

// accountClaims returns the COVE account with the revocations in list,
// the same on the embedded server and a managed external one.
func accountClaims(pub string, list jwt.RevocationList) *jwt.AccountClaims {
	ac := jwt.NewAccountClaims(pub)
	ac.Name = accountName
	// Unlimited: the account belongs to Cove alone, and streams carry their
	// own limits (EnsureStreams).
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{
		MemoryStorage:        jwt.NoLimit,
		DiskStorage:          jwt.NoLimit,
		Streams:              jwt.NoLimit,
		Consumer:             jwt.NoLimit,
		MaxAckPending:        jwt.NoLimit,
		MemoryMaxStreamBytes: jwt.NoLimit,
		DiskMaxStreamBytes:   jwt.NoLimit,
	}
	if len(list) > 0 {
		ac.Revocations = list
	}
	return ac
}

// loadRevocations reads the revocations of the account saved by push.
func loadRevocations(path, accountPub, operatorPub string) (jwt.RevocationList, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, cove.Wrap(err, "cannot read the saved NATS account")
	}
	// A saved account we can't trust would silently undo revocations, so it
	// stops the start instead.
	ac, err := jwt.DecodeAccountClaims(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, cove.Wrap(err, "the saved NATS account is corrupt")
	}
	if ac.Subject != accountPub || ac.Issuer != operatorPub {
		return nil, cove.Wrap(fmt.Errorf("%s is for account %s of operator %s", path, ac.Subject, ac.Issuer),
			"the saved NATS account does not match the keys")
	}
	return ac.Revocations, nil
}

// loadOrCreateKey reads the seed at path, or makes and saves a new key of
// kind prefix the first time, so that credentials issued before a restart
// still verify after it.
func loadOrCreateKey(path string, prefix nkeys.PrefixByte) (nkeys.KeyPair, error) {
	seed, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		kp, err := nkeys.CreatePair(prefix)
		if err != nil {
			return nil, cove.Wrap(err, "cannot create a NATS key")
		}
		seed, _ := kp.Seed() // the pair's own bytes: copy, never clear
		if err := writeFileAtomic(path, fmt.Appendf(nil, "%s\n", seed)); err != nil {
			return nil, cove.Wrap(err, "cannot save a NATS key")
		}
		return kp, nil
	}
	if err != nil {
		return nil, cove.Wrap(err, "cannot read a NATS key")
	}
	defer clear(seed)
	return parseSeed(path, seed, prefix)
}

// parseSeed checks that seed is a key of kind prefix, so that an account
// seed put where the operator's belongs fails here and not as a puzzling
// authorization error later.
func parseSeed(path string, seed []byte, prefix nkeys.PrefixByte) (nkeys.KeyPair, error) {
	seed = bytes.TrimSpace(seed)
	got, _, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, &cove.Error{Code: cove.Invalid, Message: path + ": a NATS key file holds no valid seed", Err: err}
	}
	if got != prefix {
		return nil, cove.Errorf(cove.Invalid, "%s: a NATS key file holds the wrong kind of key, a %s seed where a %s seed belongs", path, got, prefix)
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, &cove.Error{Code: cove.Invalid, Message: path + ": a NATS key file holds no valid seed", Err: err}
	}
	return kp, nil
}

// writeFileAtomic replaces path with data, readable by the owner only, so a
// crash leaves the old file or the new one and never half a seed.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // fails harmlessly once renamed
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// serverLog passes the embedded server's log to slog and reports its first
// fatal error to Open.
type serverLog struct {
	l     *slog.Logger
	fatal chan string
}

func (s serverLog) Noticef(format string, v ...any) { s.l.Info(fmt.Sprintf(format, v...)) }
func (s serverLog) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s serverLog) Errorf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s serverLog) Debugf(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s serverLog) Tracef(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }

// Fatalf does not exit: that is for main to decide, and Open reports it.
func (s serverLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	s.l.Error(msg)
	select {
	case s.fatal <- msg:
	default:
	}
}
