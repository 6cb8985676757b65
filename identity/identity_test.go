package identity_test

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sqlstore"
)

const pw = "correct horse battery"

func mustSignup(tb testing.TB, s *identity.Service, email string) *identity.User {
	tb.Helper()
	u, err := s.Signup(context.Background(), cove.Principal{}, identity.SignupInput{Email: email, Name: "N " + email, Password: pw})
	if err != nil {
		tb.Fatalf("signup %s: %v", email, err)
	}
	return u
}

func mustLogin(tb testing.TB, s *identity.Service, email string) *identity.Tokens {
	tb.Helper()
	t, err := s.Login(context.Background(), identity.LoginInput{Email: email, Password: pw, Client: "127.0.0.1"})
	if err != nil {
		tb.Fatalf("login %s: %v", email, err)
	}
	return t
}

func wantCode(tb testing.TB, err error, code cove.Code) {
	tb.Helper()
	if got := cove.ErrorCode(err); got != code {
		tb.Fatalf("error = %v (code %q), want code %q", err, got, code)
	}
}

// forEngine runs f on a fresh control plane per database engine.
func forEngine(t *testing.T, f func(t *testing.T, m *app.Main)) {
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) { f(t, apptest.StartEngine(t, e)) })
	}
}

func TestSignupRejectsBadInput(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		mustSignup(t, m.Identity, "Alice@Example.com")
		cases := []struct {
			name string
			in   identity.SignupInput
			code cove.Code
		}{
			{"empty email", identity.SignupInput{Email: "", Name: "x", Password: pw}, cove.Invalid},
			{"not an email", identity.SignupInput{Email: "alice", Name: "x", Password: pw}, cove.Invalid},
			{"email with display name", identity.SignupInput{Email: "Bob <bob@example.com>", Name: "x", Password: pw}, cove.Invalid},
			{"over-long email", identity.SignupInput{Email: strings.Repeat("a", 250) + "@x.io", Name: "x", Password: pw}, cove.Invalid},
			{"empty name", identity.SignupInput{Email: "b@example.com", Name: "  ", Password: pw}, cove.Invalid},
			{"over-long name", identity.SignupInput{Email: "b@example.com", Name: strings.Repeat("n", 101), Password: pw}, cove.Invalid},
			{"control characters in name", identity.SignupInput{Email: "b@example.com", Name: "a\x00b", Password: pw}, cove.Invalid},
			{"password of 11 characters", identity.SignupInput{Email: "b@example.com", Name: "x", Password: "12345678901"}, cove.Invalid},
			{"huge password", identity.SignupInput{Email: "b@example.com", Name: "x", Password: strings.Repeat("p", 300)}, cove.Invalid},
			{"duplicate email differing in case", identity.SignupInput{Email: "aLiCe@example.COM", Name: "x", Password: pw}, cove.Conflict},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				_, err := m.Identity.Signup(ctx, cove.Principal{}, c.in)
				wantCode(t, err, c.code)
			})
		}
		// Exactly 12 characters is enough.
		if _, err := m.Identity.Signup(ctx, cove.Principal{}, identity.SignupInput{Email: "c@example.com", Name: "C", Password: "123456789012"}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestFirstUserIsAdminAndConcurrentSignupsHaveOneWinner(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		users := make([]*identity.User, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				users[i], errs[i] = m.Identity.Signup(ctx, cove.Principal{}, identity.SignupInput{Email: "same@example.com", Name: "Same", Password: pw})
			}()
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch cove.ErrorCode(err) {
			case "":
				won++
				if !users[i].Admin {
					t.Error("the first user is not platform admin")
				}
			case cove.Conflict:
			default:
				t.Errorf("signup %d: %v", i, err)
			}
		}
		if won != 1 {
			t.Fatalf("%d concurrent signups with one email succeeded, want exactly 1", won)
		}
		if u := mustSignup(t, m.Identity, "second@example.com"); u.Admin {
			t.Fatal("the second user became admin")
		}
	})
}

func TestClosedSignup(t *testing.T) {
	cfg := apptest.Config(t.TempDir(), "")
	cfg.Auth.OpenSignup = false
	m := apptest.Start(t, cfg)
	ctx := context.Background()
	admin := mustSignup(t, m.Identity, "root@example.com")
	_, err := m.Identity.Signup(ctx, cove.Principal{}, identity.SignupInput{Email: "x@example.com", Name: "X", Password: pw})
	wantCode(t, err, cove.Forbidden)
	if _, err := m.Identity.FindUserByEmail(ctx, "x@example.com"); cove.ErrorCode(err) != cove.NotFound {
		t.Fatalf("refused signup left a user behind: %v", err)
	}
	if _, err := m.Identity.Signup(ctx, cove.Principal{UserID: admin.ID, Admin: true}, identity.SignupInput{Email: "x@example.com", Name: "X", Password: pw}); err != nil {
		t.Fatalf("admin could not create an account: %v", err)
	}
}

func TestLogin(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		mustSignup(t, m.Identity, "a@example.com")
		_, errWrong := m.Identity.Login(ctx, identity.LoginInput{Email: "a@example.com", Password: "wrong password!", Client: "c"})
		_, errUnknown := m.Identity.Login(ctx, identity.LoginInput{Email: "nobody@example.com", Password: pw, Client: "c"})
		wantCode(t, errWrong, cove.Unauthenticated)
		wantCode(t, errUnknown, cove.Unauthenticated)
		if cove.ErrorMessage(errWrong) != cove.ErrorMessage(errUnknown) {
			t.Fatalf("wrong password and unknown email answer differently: %q vs %q", cove.ErrorMessage(errWrong), cove.ErrorMessage(errUnknown))
		}
		tok := mustLogin(t, m.Identity, "A@EXAMPLE.COM")
		p, err := m.Identity.Authenticate(ctx, tok.AccessToken)
		if err != nil || p.Email != "a@example.com" {
			t.Fatalf("authenticate: %+v %v", p, err)
		}
	})
}

func TestLoginRateLimit(t *testing.T) {
	cfg := apptest.Config(t.TempDir(), "")
	cfg.Auth.LoginBurstPerEmail = 3
	cfg.Auth.LoginBurstPerClient = 5
	cfg.Auth.LoginRefill = time.Hour
	m := apptest.Start(t, cfg)
	ctx := context.Background()
	mustSignup(t, m.Identity, "a@example.com")
	for i := range 3 {
		_, err := m.Identity.Login(ctx, identity.LoginInput{Email: "a@example.com", Password: "wrong password!", Client: "c1"})
		wantCode(t, err, cove.Unauthenticated)
		_ = i
	}
	// The email is spent, even with the right password and another client.
	_, err := m.Identity.Login(ctx, identity.LoginInput{Email: "a@example.com", Password: pw, Client: "c2"})
	wantCode(t, err, cove.RateLimited)
	// The first client has 2 attempts left across any emails.
	for _, email := range []string{"b@example.com", "c@example.com"} {
		_, err := m.Identity.Login(ctx, identity.LoginInput{Email: email, Password: pw, Client: "c1"})
		wantCode(t, err, cove.Unauthenticated)
	}
	_, err = m.Identity.Login(ctx, identity.LoginInput{Email: "d@example.com", Password: pw, Client: "c1"})
	wantCode(t, err, cove.RateLimited)
}

func TestRefreshRotatesAndReplayEndsSession(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		mustSignup(t, m.Identity, "a@example.com")
		t1 := mustLogin(t, m.Identity, "a@example.com")
		t2, err := m.Identity.Refresh(ctx, t1.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		if t2.RefreshToken == t1.RefreshToken {
			t.Fatal("refresh token did not rotate")
		}
		if _, err := m.Identity.Authenticate(ctx, t2.AccessToken); err != nil {
			t.Fatalf("new access token: %v", err)
		}
		// Replaying the used token ends the whole session: the thief's and
		// the owner's tokens both stop working.
		_, err = m.Identity.Refresh(ctx, t1.RefreshToken)
		wantCode(t, err, cove.Unauthenticated)
		_, err = m.Identity.Refresh(ctx, t2.RefreshToken)
		wantCode(t, err, cove.Unauthenticated)
		_, err = m.Identity.Authenticate(ctx, t2.AccessToken)
		wantCode(t, err, cove.Unauthenticated)

		for _, bad := range []string{"", "cvr_", "cvr_" + strings.Repeat("A", 43), "nonsense", strings.Repeat("x", 5000)} {
			_, err := m.Identity.Refresh(ctx, bad)
			wantCode(t, err, cove.Unauthenticated)
		}
	})
}

func signingKey(t *testing.T, m *app.Main) []byte {
	b, err := os.ReadFile(filepath.Join(m.Config.DataDir, "secrets", "token.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestAccessTokensForgedExpiredRevoked(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		u := mustSignup(t, m.Identity, "a@example.com")
		tok := mustLogin(t, m.Identity, "a@example.com")
		p, err := m.Identity.Authenticate(ctx, tok.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		sign := func(key []byte, method jwt.SigningMethod, exp time.Time, sub string) string {
			claims := jwt.MapClaims{"iss": "cove", "sub": sub, "sid": p.SessionID, "iat": time.Now().Unix(), "exp": exp.Unix()}
			s, err := jwt.NewWithClaims(method, claims).SignedString(key)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		key := signingKey(t, m)
		if _, err := m.Identity.Authenticate(ctx, sign(key, jwt.SigningMethodHS256, time.Now().Add(time.Minute), u.ID)); err != nil {
			t.Fatalf("a token made with the real key is refused: %v", err)
		}
		parts := strings.Split(tok.AccessToken, ".")
		cases := map[string]string{
			"expired":             sign(key, jwt.SigningMethodHS256, time.Now().Add(-time.Second), u.ID),
			"wrong signature key": sign([]byte("0123456789abcdef0123456789abcdef"), jwt.SigningMethodHS256, time.Now().Add(time.Minute), u.ID),
			"other algorithm":     sign(key, jwt.SigningMethodHS512, time.Now().Add(time.Minute), u.ID),
			"alg none":            parts[0][:0] + "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + parts[1] + ".",
			"tampered payload":    parts[0] + "." + parts[1] + "x." + parts[2],
			"another user's sub":  sign(key, jwt.SigningMethodHS256, time.Now().Add(time.Minute), "usr_someoneelse"),
			"garbage":             "a.b.c",
			"unknown kind":        "hello",
			"personal, unknown":   "cvp_" + strings.Repeat("A", 43),
		}
		for name, bad := range cases {
			t.Run(name, func(t *testing.T) {
				_, err := m.Identity.Authenticate(ctx, bad)
				wantCode(t, err, cove.Unauthenticated)
			})
		}
		// Logout revokes: the still-unexpired access token stops working.
		if err := m.Identity.Logout(ctx, p); err != nil {
			t.Fatal(err)
		}
		_, err = m.Identity.Authenticate(ctx, tok.AccessToken)
		wantCode(t, err, cove.Unauthenticated)
		_, err = m.Identity.Refresh(ctx, tok.RefreshToken)
		wantCode(t, err, cove.Unauthenticated)
	})
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestPersonalAccessTokens(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		clk := &clock{t: time.Now()}
		s := identity.NewService(sqlstore.NewIdentityStore(m.DB), m.Authz, identity.Config{
			AccessTTL: time.Minute, RefreshTTL: time.Hour, MaxTokenTTL: 48 * time.Hour, OpenSignup: true,
			Argon2: identity.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}, SigningKey: signingKey(t, m),
			LoginBurstPerEmail: 100, LoginBurstPerClient: 100, LoginRefill: time.Second,
		}, clk.now)
		alice := mustSignup(t, s, "alice@example.com")
		bob := mustSignup(t, s, "bob@example.com")
		pa := cove.Principal{UserID: alice.ID}
		pb := cove.Principal{UserID: bob.ID}

		_, err := s.CreateToken(ctx, pa, "ci", 49*time.Hour)
		wantCode(t, err, cove.Invalid)
		_, err = s.CreateToken(ctx, pa, "", time.Hour)
		wantCode(t, err, cove.Invalid)

		tok, err := s.CreateToken(ctx, pa, "ci", 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok.Secret, tok.Prefix) {
			t.Fatalf("prefix %q is not the start of the secret", tok.Prefix)
		}
		p, err := s.Authenticate(ctx, tok.Secret)
		if err != nil || p.UserID != alice.ID || p.TokenID != tok.ID {
			t.Fatalf("authenticate with token: %+v %v", p, err)
		}
		list, err := s.ListTokens(ctx, pa, cove.Page{})
		if err != nil || len(list) != 1 || list[0].Hash == tok.Secret {
			t.Fatalf("list: %+v %v", list, err)
		}
		wantCode(t, s.RevokeToken(ctx, pb, tok.ID), cove.NotFound)

		clk.add(25 * time.Hour)
		_, err = s.Authenticate(ctx, tok.Secret)
		wantCode(t, err, cove.Unauthenticated)

		tok2, err := s.CreateToken(ctx, pa, "other", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeToken(ctx, pa, tok2.ID); err != nil {
			t.Fatal(err)
		}
		_, err = s.Authenticate(ctx, tok2.Secret)
		wantCode(t, err, cove.Unauthenticated)
	})
}

func TestDisableUserAndChangePassword(t *testing.T) {
	forEngine(t, func(t *testing.T, m *app.Main) {
		ctx := context.Background()
		admin := mustSignup(t, m.Identity, "admin@example.com")
		pAdmin := cove.Principal{UserID: admin.ID, Admin: true}
		u := mustSignup(t, m.Identity, "u@example.com")
		pu := cove.Principal{UserID: u.ID}

		_, err := m.Identity.ListUsers(ctx, pu, identity.UserFilter{})
		wantCode(t, err, cove.Forbidden)
		_, err = m.Identity.SetUserDisabled(ctx, pu, admin.ID, true)
		wantCode(t, err, cove.Forbidden)
		_, err = m.Identity.SetUserDisabled(ctx, pAdmin, admin.ID, true)
		wantCode(t, err, cove.Conflict)

		t1 := mustLogin(t, m.Identity, "u@example.com")
		t2 := mustLogin(t, m.Identity, "u@example.com")
		p1, _ := m.Identity.Authenticate(ctx, t1.AccessToken)
		wantCode(t, m.Identity.ChangePassword(ctx, p1, "wrong password!", "another long password"), cove.Forbidden)
		wantCode(t, m.Identity.ChangePassword(ctx, p1, pw, "short"), cove.Invalid)
		if err := m.Identity.ChangePassword(ctx, p1, pw, "another long password"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Identity.Authenticate(ctx, t1.AccessToken); err != nil {
			t.Fatalf("the session that changed the password was ended: %v", err)
		}
		_, err = m.Identity.Authenticate(ctx, t2.AccessToken)
		wantCode(t, err, cove.Unauthenticated)

		if _, err := m.Identity.SetUserDisabled(ctx, pAdmin, u.ID, true); err != nil {
			t.Fatal(err)
		}
		_, err = m.Identity.Authenticate(ctx, t1.AccessToken)
		wantCode(t, err, cove.Unauthenticated)
		_, err = m.Identity.Login(ctx, identity.LoginInput{Email: "u@example.com", Password: "another long password", Client: "c"})
		wantCode(t, err, cove.Unauthenticated)
		users, err := m.Identity.ListUsers(ctx, pAdmin, identity.UserFilter{Email: "U@example.com"})
		if err != nil || len(users) != 1 || !users[0].Disabled {
			t.Fatalf("list by email: %+v %v", users, err)
		}
	})
}
