package natsbus

import (
	"context"
	"os"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/covecompute/cove"
)

// responseWindow is how long a node or agent may take to answer a request
// addressed to it. It bounds the one-shot publish permission the server grants
// on the request's reply subject; a control-plane request waits less.
const responseWindow = time.Minute

// Credential is a NATS user for one node or one run: a user JWT signed by the
// account key and the user's nkey seed. The seed is a secret; hand the
// credential to its node or agent only, over an authenticated channel.
type Credential struct {
	// JWT is the user JWT, naming the user's permissions and expiry.
	JWT string
	// Seed is the user's nkey seed, which signs the server's connect nonce.
	Seed string
	// PublicKey names the user; RevokeUser takes it, so store it with the
	// node to be able to cut the node off later.
	PublicKey string
	// Expires is when the server stops accepting the credential and closes
	// its connections. It is whole seconds, as in the JWT.
	Expires time.Time
}

// Creds returns the credential in the creds-file format that
// nats.UserCredentials and the nats CLI read.
func (c Credential) Creds() ([]byte, error) {
	b, err := jwt.FormatUserConfig(c.JWT, []byte(c.Seed))
	if err != nil {
		return nil, cove.Wrap(err, "cannot format NATS credentials")
	}
	return b, nil
}

// Option returns the nats.Option that authenticates with the credential. The
// user may subscribe only in its own inbox, so pass nats.CustomInboxPrefix
// with NodeInboxPrefix or RunInboxPrefix too, or requests get no replies.
func (c Credential) Option() nats.Option {
	return nats.UserJWTAndSeed(c.JWT, c.Seed)
}

// IssueNodeCredential returns a credential for node that expires at expires.
// The node may publish NodeHeartbeat and NodeEvents, receive NodeControl and
// replies in NodeInboxPrefix, and answer each request it receives once.
// Errors: Invalid for a bad ID or a past expiry, Unavailable when no account
// key is configured.
func (b *Bus) IssueNodeCredential(node string, expires time.Time) (Credential, error) {
	if err := checkID("node", node); err != nil {
		return Credential{}, err
	}
	return b.issue("node "+node, nodePublish(node), nodeSubscribe(node), expires)
}

// IssueNodeUser signs a JWT for the NATS user key user, whose seed the
// node made and keeps, with IssueNodeCredential's permissions, expiring at
// expires. The returned Credential has no Seed. Signing for the same key
// again (at renewal) keeps the node one user, so that RevokeUser(user)
// refuses every JWT it was ever given. Errors: Invalid for a bad ID, a
// key that is not a user key or a past expiry; Unavailable as
// IssueNodeCredential.
func (b *Bus) IssueNodeUser(node, user string, expires time.Time) (Credential, error) {
	if err := checkID("node", node); err != nil {
		return Credential{}, err
	}
	if !nkeys.IsValidPublicUserKey(user) {
		return Credential{}, cove.Errorf(cove.Invalid, "%q is not a NATS user public key", user)
	}
	return b.sign("node "+node, user, nil, nodePublish(node), nodeSubscribe(node), expires)
}

// IssueRunCredential returns a credential for the agent of run that expires
// at expires, normally with the run. The agent may publish on the run's
// request and report subjects (RunManifest, RunInputs, RunEvents, RunLogs,
// RunHeartbeat, RunResults), receive RunControl and replies in
// RunInboxPrefix, and answer each request it receives once: nothing of any
// other run or node. Errors as IssueNodeCredential.
func (b *Bus) IssueRunCredential(run string, expires time.Time) (Credential, error) {
	if err := checkID("run", run); err != nil {
		return Credential{}, err
	}
	return b.issue("run "+run, runPublish(run), runSubscribe(run), expires)
}

func (b *Bus) issue(name string, pub, sub []string, expires time.Time) (Credential, error) {
	user, err := nkeys.CreateUser()
	if err != nil {
		return Credential{}, cove.Wrap(err, "cannot create a NATS user")
	}
	defer user.Wipe()
	userPub, _ := user.PublicKey()
	seed, _ := user.Seed()
	return b.sign(name, userPub, seed, pub, sub, expires)
}

// sign signs a user JWT for userPub; seed, if given, goes into the
// Credential.
func (b *Bus) sign(name, userPub string, seed []byte, pub, sub []string, expires time.Time) (Credential, error) {
	if b.account == nil {
		return Credential{}, cove.Errorf(cove.Unavailable,
			"cannot issue NATS credentials: set the NATS account seed file of the external NATS account")
	}
	// The JWT holds whole seconds; rounding down errs on the short side.
	exp := time.Unix(expires.Unix(), 0)
	if !exp.After(time.Now()) {
		return Credential{}, cove.Errorf(cove.Invalid, "credential expiry %s is not in the future", expires.UTC().Format(time.RFC3339))
	}
	uc := jwt.NewUserClaims(userPub)
	uc.Name = name
	uc.Expires = exp.Unix()
	uc.Pub.Allow.Add(pub...)
	uc.Sub.Allow.Add(sub...)
	// Safe only because pub and sub are disjoint; see subjects.go.
	uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: responseWindow}
	token, err := uc.Encode(b.account)
	if err != nil {
		return Credential{}, cove.Wrap(err, "cannot sign a NATS user")
	}
	return Credential{JWT: token, Seed: string(seed), PublicKey: userPub, Expires: exp}, nil
}

// RevokeUser revokes the user with publicKey (a Credential's PublicKey): the
// server closes its connections at once and refuses it from then on, also
// after a restart. The embedded server keeps the revocation in DataDir, a
// managed external one in its resolver directory. Errors: Invalid for a key
// that is not a user key; Unavailable on an unmanaged external NATS, whose
// account is revoked where it is managed (nsc revocations add-user), since
// the Bus holds no operator key to re-sign it, or when the push fails.
func (b *Bus) RevokeUser(publicKey string) error {
	if !nkeys.IsValidPublicUserKey(publicKey) {
		return cove.Errorf(cove.Invalid, "%q is not a NATS user public key", publicKey)
	}
	switch {
	case b.acc != nil:
		b.acc.mu.Lock()
		defer b.acc.mu.Unlock()
		return b.acc.push(b.srv, publicKey)
	case b.pushed != nil:
		ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
		defer cancel()
		return b.pushed.push(ctx, publicKey)
	default:
		return cove.Errorf(cove.Unavailable, "revoking NATS users needs the embedded server or a managed external one (the NATS operator seed file)")
	}
}

// readAccountSeed reads the external account's seed. When the control plane
// has a creds file it checks that the seed is that user's account: users
// signed by another account would land in a different account and never
// exchange a message with the control plane.
func readAccountSeed(seedFile, credsFile string) (nkeys.KeyPair, error) {
	seed, err := os.ReadFile(seedFile)
	if err != nil {
		return nil, &cove.Error{Code: cove.Invalid, Message: "cannot read the NATS account seed file", Err: err}
	}
	defer clear(seed)
	kp, err := parseSeed(seedFile, seed, nkeys.PrefixByteAccount)
	if err != nil {
		return nil, err
	}
	if credsFile == "" {
		return kp, nil
	}
	creds, err := os.ReadFile(credsFile)
	if err != nil {
		kp.Wipe()
		return nil, &cove.Error{Code: cove.Invalid, Message: "cannot read the NATS creds file", Err: err}
	}
	defer clear(creds)
	token, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		kp.Wipe()
		return nil, &cove.Error{Code: cove.Invalid, Message: "the NATS creds file holds no user JWT", Err: err}
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		kp.Wipe()
		return nil, &cove.Error{Code: cove.Invalid, Message: "the NATS creds file holds no valid user JWT", Err: err}
	}
	account := uc.IssuerAccount // set when a signing key signed the user
	if account == "" {
		account = uc.Issuer
	}
	if pub, _ := kp.PublicKey(); pub != account {
		kp.Wipe()
		return nil, cove.Errorf(cove.Invalid, "the NATS account seed is not the account of the creds file user")
	}
	return kp, nil
}
