package natsbus_test

import (
	"encoding/base64"
	"encoding/json"
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
)

// Client is a node or agent connected over TCP, as in production, with the
// asynchronous errors the server sent it.
type Client struct {
	*nats.Conn
	cred   natsbus.Credential
	errs   chan error
	closed chan struct{}
}

// connect dials bus's client URL with cred and inbox, without reconnecting,
// so a connection the server closes stays closed.
func connect(bus *natsbus.Bus, cred natsbus.Credential, inbox string) (*Client, error) {
	c := &Client{cred: cred, errs: make(chan error, 64), closed: make(chan struct{})}
	opts := []nats.Option{
		cred.Option(),
		nats.NoReconnect(),
		nats.Timeout(5 * time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }),
	}
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	nc, err := nats.Connect(bus.ClientURL(), opts...)
	if err != nil {
		return nil, err
	}
	c.Conn = nc
	return c, nil
}

// MustConnect connects or fails the test, and closes the connection when
// the test ends.
func MustConnect(tb testing.TB, bus *natsbus.Bus, cred natsbus.Credential, inbox string) *Client {
	tb.Helper()
	c, err := connect(bus, cred, inbox)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(c.Close)
	return c
}

// WantViolation waits for the server to report a permissions violation on
// subject. Nothing else tells a client that its publish was dropped.
func (c *Client) WantViolation(tb testing.TB, subject string) {
	tb.Helper()
	timeout := time.After(3 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return
			}
		case <-timeout:
			tb.Fatalf("no permissions violation reported for %q", subject)
		}
	}
}

// WantClosed waits for the server to close the connection, having told the
// client why with want.
func (c *Client) WantClosed(tb testing.TB, within time.Duration, want error) {
	tb.Helper()
	select {
	case <-c.closed:
	case <-time.After(within):
		tb.Fatalf("connection still open after %v", within)
	}
	// The reason arrives as an asynchronous error; the closed socket that
	// follows becomes LastError.
	var got []error
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, want) {
				return
			}
			got = append(got, err)
		default:
			tb.Errorf("connection closed with errors %v and last error %v, want %v", got, c.LastError(), want)
			return
		}
	}
}

// MustIssueRun issues an hour's credential for run or fails the test.
func MustIssueRun(tb testing.TB, bus *natsbus.Bus, run string) natsbus.Credential {
	tb.Helper()
	cred, err := bus.IssueRunCredential(run, time.Now().Add(time.Hour))
	if err != nil {
		tb.Fatalf("IssueRunCredential: %v", err)
	}
	return cred
}

// MustIssueNode issues an hour's credential for node or fails the test.
func MustIssueNode(tb testing.TB, bus *natsbus.Bus, node string) natsbus.Credential {
	tb.Helper()
	cred, err := bus.IssueNodeCredential(node, time.Now().Add(time.Hour))
	if err != nil {
		tb.Fatalf("IssueNodeCredential: %v", err)
	}
	return cred
}

// readKey reads a key from its seed file, such as the COVE account's for
// tests that sign users by hand.
func readKey(tb testing.TB, seedFile string) nkeys.KeyPair {
	tb.Helper()
	seed, err := os.ReadFile(seedFile)
	if err != nil {
		tb.Fatal(err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		tb.Fatal(err)
	}
	return kp
}

// signUser returns a credential for a new user signed by signer, claiming
// issuerAccount when not empty, with edit applied to its claims.
func signUser(tb testing.TB, signer nkeys.KeyPair, issuerAccount string, edit func(*jwt.UserClaims)) natsbus.Credential {
	tb.Helper()
	user, _ := nkeys.CreateUser()
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.IssuerAccount = issuerAccount
	edit(uc)
	token, err := uc.Encode(signer)
	if err != nil {
		tb.Fatal(err)
	}
	return natsbus.Credential{JWT: token, Seed: string(seed), PublicKey: pub}
}

// writeCreds writes cred as a creds file and returns its path.
func writeCreds(tb testing.TB, cred natsbus.Credential) string {
	tb.Helper()
	b, err := cred.Creds()
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "user.creds")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// answerRequests makes the control plane answer requests on subject the way
// Cove's responders must: only into the requester's own inbox.
func answerRequests(tb testing.TB, bus *natsbus.Bus, subject string) {
	tb.Helper()
	sub, err := bus.Conn().Subscribe(subject, func(m *nats.Msg) {
		if run, ok := natsbus.RunFromSubject(m.Subject); ok && natsbus.InRunInbox(run, m.Reply) {
			m.Respond([]byte("for " + run))
		}
		if node, ok := natsbus.NodeFromSubject(m.Subject); ok && natsbus.InNodeInbox(node, m.Reply) {
			m.Respond([]byte("for " + node))
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sub.Unsubscribe() })
	bus.Conn().Flush()
}

func TestRunCredentialOwnSubjects(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, bus *natsbus.Bus, _ string) {
		MustEnsureStreams(t, bus)
		run := cove.NewID("run")
		agent := MustConnect(t, bus, MustIssueRun(t, bus, run), natsbus.RunInboxPrefix(run))

		// Reports reach the control plane.
		for _, subject := range []string{natsbus.RunEvents(run), natsbus.RunLogs(run), natsbus.RunHeartbeat(run), natsbus.RunResults(run)} {
			reports, err := bus.Conn().SubscribeSync(subject)
			if err != nil {
				t.Fatal(err)
			}
			bus.Conn().Flush()
			if err := agent.Publish(subject, []byte("x")); err != nil {
				t.Fatal(err)
			}
			if _, err := reports.NextMsg(2 * time.Second); err != nil {
				t.Errorf("published on %s, control plane got %v", subject, err)
			}
			reports.Unsubscribe()
		}

		// Requests to the control plane get replies through the run's inbox.
		answerRequests(t, bus, natsbus.AllRunManifests)
		answerRequests(t, bus, natsbus.AllRunInputs)
		for _, subject := range []string{natsbus.RunManifest(run), natsbus.RunInputs(run)} {
			reply, err := agent.Request(subject, nil, 2*time.Second)
			if err != nil || string(reply.Data) != "for "+run {
				t.Errorf("request on %s: %v, %v", subject, reply, err)
			}
		}

		// The control plane's requests reach the agent, and it may answer once.
		control, err := agent.Subscribe(natsbus.RunControl(run), func(m *nats.Msg) {
			m.Respond([]byte("evidence"))
			m.Respond([]byte("a second answer the server must drop"))
		})
		if err != nil {
			t.Fatal(err)
		}
		defer control.Unsubscribe()
		agent.Flush()
		reply, err := bus.Conn().Request(natsbus.RunControl(run), []byte("challenge"), 2*time.Second)
		if err != nil || string(reply.Data) != "evidence" {
			t.Fatalf("control-plane request to agent: %v, %v", reply, err)
		}
		agent.WantViolation(t, reply.Subject)
	})
}

func TestRunCredentialDenied(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, bus *natsbus.Bus, _ string) {
		MustEnsureStreams(t, bus)
		runA, runB, node := cove.NewID("run"), cove.NewID("run"), cove.NewID("node")
		agentA := MustConnect(t, bus, MustIssueRun(t, bus, runA), natsbus.RunInboxPrefix(runA))
		agentB := MustConnect(t, bus, MustIssueRun(t, bus, runB), natsbus.RunInboxPrefix(runB))

		// Whatever agent A manages to deliver, the control plane or agent B sees.
		leaked, err := bus.Conn().SubscribeSync(">")
		if err != nil {
			t.Fatal(err)
		}
		bus.Conn().Flush()

		for _, subject := range []string{
			natsbus.RunLogs(runB), natsbus.RunEvents(runB), natsbus.RunControl(runB),
			natsbus.RunInboxPrefix(runB) + ".>", natsbus.RunInboxPrefix(runB) + ".x.y",
			natsbus.NodeControl(node), natsbus.NodeInboxPrefix(node) + ".>",
			natsbus.AllRunLogs, "cove.>", ">", "_INBOX.>", "$JS.API.>", "$SYS.>",
			// Its own reports: see "reflection" below.
			natsbus.RunLogs(runA),
			// The stored logs are the control plane's.
			natsbus.RunLogStore(runA), natsbus.AllRunLogStores,
		} {
			t.Run("subscribe "+subject, func(t *testing.T) {
				if _, err := agentA.SubscribeSync(subject); err != nil {
					t.Fatal(err)
				}
				agentA.WantViolation(t, subject)
			})
		}
		for _, subject := range []string{
			natsbus.RunLogs(runB), natsbus.RunEvents(runB), natsbus.RunHeartbeat(runB), natsbus.RunManifest(runB),
			natsbus.RunControl(runB), natsbus.RunInboxPrefix(runB) + ".x",
			natsbus.NodeHeartbeat(node), natsbus.NodeControl(node),
			natsbus.RunControl(runA), natsbus.RunInboxPrefix(runA) + ".x",
			natsbus.RunLogStore(runA), natsbus.RunLogStore(runB), // only the control plane stores logs
			"$JS.API.STREAM.LIST", "$JS.API.STREAM.DELETE." + natsbus.StreamRunLogs, "_INBOX.x", "other",
		} {
			t.Run("publish "+subject, func(t *testing.T) {
				if err := agentA.Publish(subject, []byte("forged")); err != nil {
					t.Fatal(err)
				}
				agentA.WantViolation(t, subject)
			})
		}

		// Reflection: agent A names agent B's control subject as the reply of a
		// report. The stream must not acknowledge there, and A, which cannot
		// receive its own reports, earns no response permission on it.
		control, err := agentB.SubscribeSync(natsbus.RunControl(runB))
		if err != nil {
			t.Fatal(err)
		}
		agentB.Flush()
		if err := agentA.PublishRequest(natsbus.RunLogs(runA), natsbus.RunControl(runB), []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := agentA.Publish(natsbus.RunControl(runB), []byte("forged")); err != nil {
			t.Fatal(err)
		}
		agentA.WantViolation(t, natsbus.RunControl(runB))
		if msg, err := control.NextMsg(500 * time.Millisecond); err == nil {
			t.Errorf("agent B received %q on its control subject", msg.Data)
		}

		for {
			msg, err := leaked.NextMsg(200 * time.Millisecond)
			if err != nil {
				break
			}
			if string(msg.Data) == "forged" {
				t.Errorf("agent A delivered a message on %s", msg.Subject)
			}
		}
	})
}

func TestNodeCredential(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, bus *natsbus.Bus, _ string) {
		nodeA, nodeB, run := cove.NewID("node"), cove.NewID("node"), cove.NewID("run")
		credA := MustIssueNode(t, bus, nodeA)
		a := MustConnect(t, bus, credA, natsbus.NodeInboxPrefix(nodeA))

		t.Run("own subjects", func(t *testing.T) {
			beats, err := bus.Conn().SubscribeSync(natsbus.AllNodeHeartbeats)
			if err != nil {
				t.Fatal(err)
			}
			defer beats.Unsubscribe()
			bus.Conn().Flush()
			if err := a.Publish(natsbus.NodeHeartbeat(nodeA), []byte("capacity")); err != nil {
				t.Fatal(err)
			}
			msg, err := beats.NextMsg(2 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := natsbus.NodeFromSubject(msg.Subject); got != nodeA {
				t.Errorf("heartbeat from %q, want %q", got, nodeA)
			}
		})

		t.Run("request through its inbox", func(t *testing.T) {
			answerRequests(t, bus, natsbus.AllNodeEvents)
			reply, err := a.Request(natsbus.NodeEvents(nodeA), []byte("sandbox started"), 2*time.Second)
			if err != nil || string(reply.Data) != "for "+nodeA {
				t.Fatalf("request: %v, %v", reply, err)
			}
			if !strings.HasPrefix(reply.Subject, natsbus.NodeInboxPrefix(nodeA)+".") {
				t.Errorf("reply came on %s, outside the node's inbox", reply.Subject)
			}
		})

		t.Run("request without its inbox", func(t *testing.T) {
			// The default _INBOX is not the node's: the reply can't be received.
			plain := MustConnect(t, bus, credA, "")
			if _, err := plain.Request(natsbus.NodeEvents(nodeA), nil, 500*time.Millisecond); err == nil {
				t.Error("request with the default inbox got a reply")
			}
		})

		t.Run("answers control requests", func(t *testing.T) {
			sub, err := a.Subscribe(natsbus.NodeControl(nodeA), func(m *nats.Msg) { m.Respond([]byte("started")) })
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			a.Flush()
			reply, err := bus.Conn().Request(natsbus.NodeControl(nodeA), []byte("start "+run), 2*time.Second)
			if err != nil || string(reply.Data) != "started" {
				t.Fatalf("control request: %v, %v", reply, err)
			}
		})

		t.Run("other node and runs denied", func(t *testing.T) {
			for _, subject := range []string{
				natsbus.NodeControl(nodeB), natsbus.NodeHeartbeat(nodeB), natsbus.NodeInboxPrefix(nodeB) + ".>",
				natsbus.AllNodeHeartbeats, natsbus.RunLogs(run), natsbus.RunControl(run), "cove.>",
			} {
				if _, err := a.SubscribeSync(subject); err != nil {
					t.Fatal(err)
				}
				a.WantViolation(t, subject)
			}
			for _, subject := range []string{
				natsbus.NodeHeartbeat(nodeB), natsbus.NodeEvents(nodeB), natsbus.NodeControl(nodeB),
				natsbus.NodeControl(nodeA), natsbus.RunManifest(run), natsbus.RunLogs(run), "$JS.API.INFO",
			} {
				if err := a.Publish(subject, nil); err != nil {
					t.Fatal(err)
				}
				a.WantViolation(t, subject)
			}
		})
	})
}

func TestRefusedCredentials(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, bus *natsbus.Bus, accountSeed string) {
		account := readKey(t, accountSeed)
		accountPub, _ := account.PublicKey()
		stranger, _ := nkeys.CreateAccount()
		valid := MustIssueNode(t, bus, cove.NewID("node"))

		tampered := valid
		header, payload, sig := splitJWT(t, valid.JWT)
		var claims map[string]any
		decodeSegment(t, payload, &claims)
		claims["nats"].(map[string]any)["pub"] = map[string]any{"allow": []string{">"}}
		claims["nats"].(map[string]any)["sub"] = map[string]any{"allow": []string{">"}}
		tampered.JWT = header + "." + encodeSegment(t, claims) + "." + sig

		tests := []struct {
			name string
			cred natsbus.Credential
		}{
			{"expired", signUser(t, account, "", func(uc *jwt.UserClaims) { uc.Expires = time.Now().Add(-time.Minute).Unix() })},
			{"not yet valid", signUser(t, account, "", func(uc *jwt.UserClaims) { uc.NotBefore = time.Now().Add(time.Hour).Unix() })},
			{"signed by another account", signUser(t, stranger, "", func(*jwt.UserClaims) {})},
			{"another account's key posing as a signing key", signUser(t, stranger, accountPub, func(*jwt.UserClaims) {})},
			{"permissions edited after signing", tampered},
			{"seed of another user", natsbus.Credential{JWT: valid.JWT, Seed: signUser(t, account, "", func(*jwt.UserClaims) {}).Seed}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c, err := connect(bus, tt.cred, "")
				if err == nil {
					c.Close()
					t.Fatal("server accepted the credential")
				}
				if !errors.Is(err, nats.ErrAuthorization) && !errors.Is(err, nats.ErrAuthExpired) {
					t.Errorf("connect error %v, want an authorization error", err)
				}
			})
		}

		t.Run("control: valid credential and hand-signed user connect", func(t *testing.T) {
			for _, cred := range []natsbus.Credential{valid, signUser(t, account, "", func(*jwt.UserClaims) {})} {
				c, err := connect(bus, cred, "")
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				c.Close()
			}
		})
	})
}

func TestCredentialExpiresWhileConnected(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, bus *natsbus.Bus, _ string) {
		run := cove.NewID("run")
		cred, err := bus.IssueRunCredential(run, time.Now().Add(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		agent := MustConnect(t, bus, cred, natsbus.RunInboxPrefix(run))
		agent.WantClosed(t, 5*time.Second, nats.ErrAuthExpired)
		// The server closes connections up to a second early but checks new
		// ones against the whole second of exp.
		time.Sleep(time.Until(cred.Expires.Add(1100 * time.Millisecond)))
		if _, err := connect(bus, cred, ""); !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("connect after expiry: %v, want %v", err, nats.ErrAuthorization)
		}
	})
}

func TestRevokeUser(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, bus *natsbus.Bus, _ string) {
		nodeA, nodeB := cove.NewID("node"), cove.NewID("node")
		credA := MustIssueNode(t, bus, nodeA)
		a := MustConnect(t, bus, credA, natsbus.NodeInboxPrefix(nodeA))
		b := MustConnect(t, bus, MustIssueNode(t, bus, nodeB), natsbus.NodeInboxPrefix(nodeB))

		if err := bus.RevokeUser(credA.PublicKey); err != nil {
			t.Fatalf("RevokeUser: %v", err)
		}
		a.WantClosed(t, 5*time.Second, nats.ErrAuthRevoked)
		if _, err := connect(bus, credA, natsbus.NodeInboxPrefix(nodeA)); !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("revoked credential reconnect: %v, want %v", err, nats.ErrAuthorization)
		}

		// Others keep working, also across a second revocation.
		if err := bus.RevokeUser(MustIssueNode(t, bus, nodeB).PublicKey); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(natsbus.NodeHeartbeat(nodeB), nil); err != nil {
			t.Fatal(err)
		}
		if err := b.FlushTimeout(2 * time.Second); err != nil || !b.IsConnected() {
			t.Errorf("node B after revoking node A: %v", err)
		}
		if _, err := connect(bus, credA, ""); err == nil {
			t.Error("first revocation lost after the second")
		}

		for _, key := range []string{"", "not a key", nodeA, func() string { a, _ := nkeys.CreateAccount(); p, _ := a.PublicKey(); return p }()} {
			if err := bus.RevokeUser(key); cove.ErrorCode(err) != cove.Invalid {
				t.Errorf("RevokeUser(%q) = %v, want invalid", key, err)
			}
		}
	})
}

func TestIssueRejects(t *testing.T) {
	t.Parallel()
	bus := MustOpen(t, t.TempDir())
	later := time.Now().Add(time.Hour)
	for _, id := range []string{"", "a.b", "a*", "*", "a>", ">", "a b", " a", "a\t", "a\nb", "a\x00b", "a\u00a0b"} {
		if _, err := bus.IssueNodeCredential(id, later); cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("IssueNodeCredential(%q) = %v, want invalid", id, err)
		}
		if _, err := bus.IssueRunCredential(id, later); cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("IssueRunCredential(%q) = %v, want invalid", id, err)
		}
	}
	// The last is in the future, but not once rounded down to the second.
	for _, expires := range []time.Time{{}, time.Now(), time.Now().Add(-time.Hour), time.Now().Truncate(time.Second).Add(999 * time.Millisecond)} {
		if _, err := bus.IssueRunCredential(cove.NewID("run"), expires); cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("IssueRunCredential expiring %v = %v, want invalid", expires, err)
		}
	}
}

func TestCredentialFormats(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, bus *natsbus.Bus, _ string) {
		run := cove.NewID("run")
		expires := time.Now().Add(time.Hour)
		cred := MustIssueRun(t, bus, run)

		if !cred.Expires.Equal(time.Unix(expires.Unix(), 0)) && !cred.Expires.Equal(time.Unix(expires.Unix()-1, 0)) {
			t.Errorf("Expires = %v, want about %v", cred.Expires, expires)
		}
		uc, err := jwt.DecodeUserClaims(cred.JWT)
		if err != nil {
			t.Fatal(err)
		}
		if uc.Subject != cred.PublicKey || uc.Expires != cred.Expires.Unix() {
			t.Errorf("JWT subject %s expires %d, credential says %s, %d", uc.Subject, uc.Expires, cred.PublicKey, cred.Expires.Unix())
		}

		// The creds file works where nats.UserCredentials reads it.
		nc, err := nats.Connect(bus.ClientURL(), nats.UserCredentials(writeCreds(t, cred)), nats.CustomInboxPrefix(natsbus.RunInboxPrefix(run)))
		if err != nil {
			t.Fatalf("connect with creds file: %v", err)
		}
		nc.Close()
	})
}

func splitJWT(tb testing.TB, token string) (header, payload, sig string) {
	tb.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		tb.Fatalf("JWT has %d parts", len(parts))
	}
	return parts[0], parts[1], parts[2]
}

func decodeSegment(tb testing.TB, seg string, v any) {
	tb.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		tb.Fatal(err)
	}
}

func encodeSegment(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
