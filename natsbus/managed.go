package natsbus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/covecompute/cove"
)

// A managed external NATS is an operator-mode nats-server (or cluster) with
// a full account resolver, as InitExternal prepares it. The Bus holds the
// operator key, signs the COVE account exactly as the embedded server's,
// and pushes it through the system account. The server keeps the pushed
// account in its resolver directory.
//
// Revocations also live in a JetStream key-value bucket of the COVE
// account, written with compare-and-set: two replicas revoking at once
// cannot both start from the same list, so every list a replica pushes
// holds every revocation written before it. A replica that pushed an older
// list than the bucket's pushes again, so the server ends with the latest.

// System account subjects of nats-server's full resolver.
const (
	// claimsUpdateSubject takes an account JWT signed by a trusted operator
	// and answers with a server.ServerAPIClaimUpdateResponse.
	claimsUpdateSubject = "$SYS.REQ.CLAIMS.UPDATE"
	// varzSubject asks every server for its varz, which names the
	// operators it trusts.
	varzSubject = "$SYS.REQ.SERVER.PING.VARZ"
	// claimsListSubject answers with the IDs of the accounts the server
	// holds, as {"data": [...]}.
	claimsListSubject = "$SYS.REQ.CLAIMS.LIST"
	// claimsLookupSubject answers with the account's JWT. When the server
	// has none, newer servers answer with nothing and older ones (2.9) not
	// at all, which is why lookup lists the accounts first.
	claimsLookupSubject = "$SYS.REQ.ACCOUNT.%s.CLAIMS.LOOKUP"
)

// pushTimeout bounds one push when the caller gives no deadline.
const pushTimeout = 10 * time.Second

// pushAttempts is how often a revocation is written or pushed before
// giving up, when other replicas keep writing in between.
const pushAttempts = 10

// Revocations bucket: one key holding the JSON of a jwt.RevocationList.
const (
	revocationsBucket = "COVE_NATS_REVOCATIONS"
	revocationsKey    = "users"
)

// pushedAccount is what a managed Bus needs to re-sign and push the COVE
// account.
type pushedAccount struct {
	mu       sync.Mutex // serializes pushes from this process
	operator nkeys.KeyPair
	pub      string     // the COVE account's public key
	sys      *nats.Conn // a user of the system account
	// denied receives the permissions violations of sys: a user of
	// another account may be refused the system subjects or its inbox,
	// and its requests would otherwise wait out their timeout.
	denied chan error

	// js and replicas make the revocations bucket, once the control
	// plane's own connection is up; kv is the bucket once made.
	js       jetstream.JetStream
	replicas int
	kv       jetstream.KeyValue
}

// setJetStream gives p the control plane's JetStream, for the revocations
// bucket.
func (p *pushedAccount) setJetStream(js jetstream.JetStream, replicas int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.js, p.replicas = js, max(replicas, 1)
}

// openManaged reads the operator key, connects as the system user and
// pushes the COVE account, keeping the revocations the server holds.
func (b *Bus) openManaged(ctx context.Context) error {
	seed, err := os.ReadFile(b.cfg.OperatorSeedFile)
	if err != nil {
		return &cove.Error{Code: cove.Invalid, Message: "cannot read the NATS operator seed file " + b.cfg.OperatorSeedFile, Err: err}
	}
	defer clear(seed)
	operator, err := parseSeed(b.cfg.OperatorSeedFile, seed, nkeys.PrefixByteOperator)
	if err != nil {
		return err
	}
	p := &pushedAccount{operator: operator, denied: make(chan error, 1)}
	b.pushed = p
	p.pub, _ = b.account.PublicKey()
	if _, err := os.Stat(b.cfg.SystemCredsFile); err != nil {
		return &cove.Error{Code: cove.Invalid, Message: "cannot read the NATS system creds file " + b.cfg.SystemCredsFile, Err: err}
	}
	p.sys, err = nats.Connect(b.cfg.URL,
		nats.Name("cove control plane (account push)"),
		nats.UserCredentials(b.cfg.SystemCredsFile),
		nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				select {
				case p.denied <- err:
				default:
				}
			}
			b.log.Error("NATS error on the system account connection", "err", err)
		}),
	)
	if errors.Is(err, nats.ErrAuthorization) {
		return &cove.Error{Code: cove.Invalid, Message: "NATS refused the system creds file: is it a user of the system account of the operator the server trusts?", Err: err}
	}
	if err != nil {
		return &cove.Error{Code: cove.Unavailable, Message: "cannot connect to NATS with the system creds file", Err: err}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, pushTimeout)
		defer cancel()
	}
	if err := p.checkTrusted(ctx); err != nil {
		return err
	}
	if err := p.push(ctx); err != nil {
		return err
	}
	b.log.Info("pushed the COVE account to NATS", "account", p.pub, "url", p.sys.ConnectedUrlRedacted())
	return nil
}

// checkTrusted makes sure the server trusts the operator before anything is
// pushed: a full resolver stores an account signed by an operator it does
// not trust, answers that it did, and then cannot use it, which would cut
// off every node and agent of the deployment.
func (p *pushedAccount) checkTrusted(ctx context.Context) error {
	msg, err := p.request(ctx, varzSubject, nil)
	if err != nil {
		return p.requestError(err, "cannot ask NATS which operator it trusts")
	}
	var varz struct {
		Data struct {
			Operators []*jwt.OperatorClaims `json:"trusted_operators_claim"`
		} `json:"data"`
	}
	if err := json.Unmarshal(msg.Data, &varz); err != nil {
		return cove.Wrap(fmt.Errorf("reply %q: %w", msg.Data, err), "NATS answered the varz request with something else than varz")
	}
	op, _ := p.operator.PublicKey()
	for _, oc := range varz.Data.Operators {
		if oc != nil && (oc.Subject == op || oc.SigningKeys.Contains(op)) {
			return nil
		}
	}
	return cove.Errorf(cove.Invalid,
		"NATS does not trust the operator of the operator seed file (%s); use the operator seed written with the server's operator JWT (cove nats init)", op)
}

// push signs the COVE account with the revocations the server holds plus
// revoke, and pushes it. The server closes the connections of newly revoked
// users. With revocations to add, it reads the account back and pushes
// again if another replica's push replaced its own in between. Without,
// it pushes only when the server's account differs from what it would
// sign, so that replicas starting up do not race the revocations of
// others.
func (p *pushedAccount) push(ctx context.Context, revoke ...string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(revoke) > 0 && p.js != nil {
		return p.revoke(ctx, revoke)
	}
	now := time.Now()
	for range pushAttempts {
		held, err := p.lookup(ctx)
		if err != nil {
			return err
		}
		list := jwt.RevocationList{}
		if held != nil {
			maps.Copy(list, held.Revocations)
		}
		for _, pub := range revoke {
			// A revocation covers JWTs issued up to and including its second.
			list.Revoke(pub, now)
		}
		ac := accountClaims(p.pub, list)
		token, err := ac.Encode(p.operator)
		if err != nil {
			return cove.Wrap(err, "cannot sign the NATS account")
		}
		if len(revoke) == 0 && held != nil && sameAccount(held, ac) {
			return nil
		}
		if err := p.send(ctx, token); err != nil {
			return err
		}
		if len(revoke) == 0 {
			return nil
		}
		if held, err = p.lookup(ctx); err != nil {
			return err
		}
		if held != nil && revokedAll(held.Revocations, revoke, now) {
			return nil
		}
	}
	return cove.Errorf(cove.Unavailable, "the NATS account revocation was replaced by another push %d times; try again", pushAttempts)
}

// revoke adds revoke to the revocations bucket with compare-and-set, then
// pushes the account with the bucket's list until the list it pushed is
// the bucket's latest. The caller holds p.mu.
func (p *pushedAccount) revoke(ctx context.Context, revoke []string) error {
	if p.kv == nil {
		kv, err := p.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: revocationsBucket, Description: "Revoked NATS users of the COVE account", History: 1, Replicas: p.replicas,
		})
		if err != nil {
			return &cove.Error{Code: cove.Unavailable, Message: "cannot open the NATS revocations bucket", Err: err}
		}
		p.kv = kv
	}
	now := time.Now()
	var written uint64
	for attempt := 0; ; attempt++ {
		if attempt == pushAttempts {
			return cove.Errorf(cove.Unavailable, "other replicas kept revoking NATS users at the same time %d times; try again", pushAttempts)
		}
		list, rev, err := p.revocations(ctx)
		if err != nil {
			return err
		}
		// Revocations pushed before the bucket existed stay.
		if held, err := p.lookup(ctx); err != nil {
			return err
		} else if held != nil {
			for pub, at := range held.Revocations {
				list[pub] = max(list[pub], at)
			}
		}
		for _, pub := range revoke {
			// A revocation covers JWTs issued up to and including its second.
			list.Revoke(pub, now)
		}
		data, err := json.Marshal(list)
		if err != nil {
			return cove.Wrap(err, "cannot encode the NATS revocations")
		}
		if rev == 0 {
			written, err = p.kv.Create(ctx, revocationsKey, data)
		} else {
			written, err = p.kv.Update(ctx, revocationsKey, data, rev)
		}
		if casConflict(err) {
			continue // another replica wrote first: start from its list
		}
		if err != nil {
			return &cove.Error{Code: cove.Unavailable, Message: "cannot write the NATS revocations", Err: err}
		}
		break
	}
	// Push until the list pushed is the bucket's latest: a replica that
	// wrote earlier may push its older list after ours, and then pushes
	// ours again when it sees the bucket moved on.
	for range pushAttempts {
		list, rev, err := p.revocations(ctx)
		if err != nil {
			return err
		}
		if rev < written {
			return cove.Errorf(cove.Unavailable, "the NATS revocations bucket went back to revision %d after %d", rev, written)
		}
		token, err := accountClaims(p.pub, list).Encode(p.operator)
		if err != nil {
			return cove.Wrap(err, "cannot sign the NATS account")
		}
		if err := p.send(ctx, token); err != nil {
			return err
		}
		if _, latest, err := p.revocations(ctx); err != nil {
			return err
		} else if latest == rev {
			return nil
		}
	}
	return cove.Errorf(cove.Unavailable, "other replicas kept revoking NATS users at the same time %d times; try again", pushAttempts)
}

// revocations returns the bucket's list and its revision, 0 when empty.
func (p *pushedAccount) revocations(ctx context.Context) (jwt.RevocationList, uint64, error) {
	list := jwt.RevocationList{}
	e, err := p.kv.Get(ctx, revocationsKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return list, 0, nil
	}
	if err != nil {
		return nil, 0, &cove.Error{Code: cove.Unavailable, Message: "cannot read the NATS revocations", Err: err}
	}
	if err := json.Unmarshal(e.Value(), &list); err != nil {
		return nil, 0, cove.Wrap(err, "the NATS revocations bucket holds something else than a revocation list")
	}
	return list, e.Revision(), nil
}

// casConflict reports whether err is a compare-and-set write that lost.
func casConflict(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.As(err, &api) &&
		(api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// sameAccount reports whether held, the account on the server, says what
// signed says, by the same operator.
func sameAccount(held, signed *jwt.AccountClaims) bool {
	a, errA := json.Marshal(held.Account)
	b, errB := json.Marshal(signed.Account)
	return errA == nil && errB == nil && bytes.Equal(a, b) && held.Issuer == signed.Issuer && held.Name == signed.Name
}

// revokedAll reports whether list revokes every key of revoke from at on.
func revokedAll(list jwt.RevocationList, revoke []string, at time.Time) bool {
	for _, pub := range revoke {
		if list[pub] < at.Unix() {
			return false
		}
	}
	return true
}

// lookup returns the COVE account the server holds, nil when it holds no
// such account yet.
func (p *pushedAccount) lookup(ctx context.Context) (*jwt.AccountClaims, error) {
	msg, err := p.request(ctx, claimsListSubject, nil)
	if err != nil {
		return nil, p.requestError(err, "cannot list the accounts of NATS")
	}
	var held struct {
		Data []string `json:"data"`
	}
	if err := json.Unmarshal(msg.Data, &held); err != nil {
		return nil, cove.Wrap(fmt.Errorf("reply %q: %w", msg.Data, err), "NATS answered the account list with something else than a list")
	}
	if !slices.Contains(held.Data, p.pub) {
		return nil, nil
	}
	msg, err = p.request(ctx, fmt.Sprintf(claimsLookupSubject, p.pub), nil)
	if err != nil {
		return nil, p.requestError(err, "cannot read the COVE account from NATS")
	}
	if len(msg.Data) == 0 {
		return nil, nil
	}
	ac, err := jwt.DecodeAccountClaims(string(msg.Data))
	if err != nil || ac.Subject != p.pub {
		// Starting over from nothing would silently undo revocations.
		return nil, cove.Errorf(cove.Internal, "NATS returned an unreadable COVE account for %s", p.pub)
	}
	return ac, nil
}

// send pushes the signed account token, reporting the server's refusal in
// its own words.
func (p *pushedAccount) send(ctx context.Context, token string) error {
	msg, err := p.request(ctx, claimsUpdateSubject, []byte(token))
	if err != nil {
		return p.requestError(err, "cannot push the COVE account to NATS")
	}
	var resp server.ServerAPIClaimUpdateResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return cove.Wrap(fmt.Errorf("reply %q: %w", msg.Data, err), "NATS answered the account push with something else than a claim update response")
	}
	if resp.Error != nil {
		return cove.Errorf(cove.Invalid, "NATS refused the COVE account signed with the operator seed file: %s", resp.Error.Description)
	}
	if resp.Data == nil {
		return cove.Errorf(cove.Internal, "NATS answered the account push without a status")
	}
	return nil
}

// request sends a request to the system account and waits for the reply,
// or for the server to deny the request or its reply.
func (p *pushedAccount) request(ctx context.Context, subject string, data []byte) (*nats.Msg, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case err := <-p.denied:
			cancel(err)
		case <-done:
		}
	}()
	msg, err := p.sys.RequestWithContext(ctx, subject, data)
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, nats.ErrPermissionViolation) {
		err = cause
	}
	return msg, err
}

// requestError explains a failed request to the system account.
func (p *pushedAccount) requestError(err error, msg string) error {
	if errors.Is(err, nats.ErrPermissionViolation) {
		return &cove.Error{Code: cove.Invalid, Err: err, Message: msg +
			": NATS denied the system creds file's user; it must be a user of the server's system account"}
	}
	if errors.Is(err, nats.ErrNoResponders) {
		return &cove.Error{Code: cove.Invalid, Err: err, Message: msg +
			": nobody answers on the system account; the server must run in operator mode with a full resolver (resolver { type: full }) and the system creds file be a user of its system account"}
	}
	return &cove.Error{Code: cove.Unavailable, Message: msg, Err: err}
}

// selfSignedUser returns the option that connects the control plane as a
// user it signs itself: a new key at every start, held in memory only.
func (b *Bus) selfSignedUser() (nats.Option, error) {
	token, seed, err := b.controlPlaneUser(func(*jwt.UserClaims) {})
	if err != nil {
		return nil, err
	}
	return nats.UserJWTAndSeed(token, seed), nil
}

// close ends the system user's connection and wipes the operator key.
func (p *pushedAccount) close() {
	if p.sys != nil {
		p.sys.Close()
	}
	p.operator.Wipe()
}
