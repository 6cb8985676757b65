package sdk_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sdk"
	"github.com/covecompute/cove/sdk/sdktest"
	"github.com/covecompute/cove/workspace"
)

const password = "correct horse battery"

// MustNew returns a client of url without credentials.
func MustNew(tb testing.TB, url string, opts ...sdk.Option) *sdk.Client {
	tb.Helper()
	c, err := sdk.New(url, opts...)
	if err != nil {
		tb.Fatalf("sdk.New(%q): %v", url, err)
	}
	return c
}

// MustLogin signs email up on the server at url, logs in and returns the
// logged-in client with the tokens.
func MustLogin(tb testing.TB, url, email string) (*sdk.Client, *identity.Tokens) {
	tb.Helper()
	ctx := context.Background()
	c := MustNew(tb, url)
	if _, err := c.Signup(ctx, identity.SignupInput{Email: email, Name: strings.Split(email, "@")[0], Password: password}); err != nil {
		tb.Fatalf("Signup(%s): %v", email, err)
	}
	t, err := c.Login(ctx, identity.LoginInput{Email: email, Password: password})
	if err != nil {
		tb.Fatalf("Login(%s): %v", email, err)
	}
	return c, t
}

// wantCode fails the test unless err carries code.
func wantCode(tb testing.TB, err error, code cove.Code) {
	tb.Helper()
	if got := cove.ErrorCode(err); got != code {
		tb.Fatalf("error code = %q (%v), want %q", got, err, code)
	}
}

func TestSignupLoginMe(t *testing.T) {
	srv := sdktest.NewServer(t)
	ctx := context.Background()
	c := MustNew(t, srv.URL+"/")

	u, err := c.Signup(ctx, identity.SignupInput{Email: "Ada@Example.com", Name: "Ada", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	if u.Email != "ada@example.com" || !u.Admin || !strings.HasPrefix(u.ID, "usr_") {
		t.Fatalf("Signup = %+v, want the normalized email, admin (first user) and an ID", u)
	}
	if _, err := c.Me(ctx); cove.ErrorCode(err) != cove.Unauthenticated {
		t.Fatalf("Me before login: %v, want unauthenticated", err)
	}
	tokens, err := c.Login(ctx, identity.LoginInput{Email: "ada@example.com", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	if tokens.AccessToken == "" || tokens.RefreshToken == "" || tokens.User.ID != u.ID {
		t.Fatalf("Login = %+v", tokens)
	}
	me, err := c.Me(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if me.ID != u.ID || me.Name != "Ada" {
		t.Fatalf("Me = %+v, want %+v", me, u)
	}
	if err := c.ChangePassword(ctx, "wrong password!", "another good password"); cove.ErrorCode(err) != cove.Forbidden {
		t.Fatalf("ChangePassword with a wrong current password: %v, want forbidden", err)
	}
	if err := c.ChangePassword(ctx, password, "another good password"); err != nil {
		t.Fatal(err)
	}
	if err := c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	// The session is over for anyone holding its tokens.
	old := MustNew(t, srv.URL, sdk.WithToken(tokens.AccessToken))
	wantCode(t, func() error { _, err := old.Me(ctx); return err }(), cove.Unauthenticated)
}

func TestErrorsKeepTheirCode(t *testing.T) {
	srv := sdktest.NewServer(t)
	ctx := context.Background()
	admin, _ := MustLogin(t, srv.URL, "admin@example.com")
	user, _ := MustLogin(t, srv.URL, "user@example.com")

	tests := []struct {
		name  string
		call  func() error
		code  cove.Code
		field string // a detail expected on this field
	}{
		{"duplicate signup", func() error {
			_, err := user.Signup(ctx, identity.SignupInput{Email: "user@example.com", Name: "Again", Password: password})
			return err
		}, cove.Conflict, ""},
		{"wrong password", func() error {
			_, err := MustNew(t, srv.URL).Login(ctx, identity.LoginInput{Email: "user@example.com", Password: "not the password"})
			return err
		}, cove.Unauthenticated, ""},
		{"invalid email", func() error {
			_, err := user.Signup(ctx, identity.SignupInput{Email: "nope", Name: "N", Password: password})
			return err
		}, cove.Invalid, "email"},
		{"unknown workspace", func() error {
			_, err := user.GetWorkspace(ctx, "ws_00000000000000000000000000")
			return err
		}, cove.NotFound, ""},
		{"not an admin", func() error {
			_, _, err := user.ListUsers(ctx, sdk.UserFilter{})
			return err
		}, cove.Forbidden, ""},
		{"bad limit", func() error {
			_, _, err := admin.ListUsers(ctx, sdk.UserFilter{ListOptions: sdk.ListOptions{Limit: 100000}})
			return err
		}, cove.Invalid, "limit"},
		{"bad duration", func() error {
			_, err := user.CreateToken(ctx, httpapi.TokenInput{Name: "ci", ExpiresIn: "soon"})
			return err
		}, cove.Invalid, "expires_in"},
		{"bad role", func() error {
			w, err := user.CreateWorkspace(ctx, "roles")
			if err != nil {
				return err
			}
			_, err = user.Invite(ctx, w.ID, "x@example.com", "boss")
			return err
		}, cove.Invalid, "role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			wantCode(t, err, tt.code)
			var e *cove.Error
			if !errors.As(err, &e) || e.Message == "" {
				t.Fatalf("error %v is not a *cove.Error with a message", err)
			}
			if tt.field != "" && !hasDetail(e.Details, tt.field) {
				t.Fatalf("details %+v lack field %q", e.Details, tt.field)
			}
		})
	}
}

func hasDetail(ds []cove.Detail, field string) bool {
	for _, d := range ds {
		if d.Field == field {
			return true
		}
	}
	return false
}

func TestUnreachableServer(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now

	_, err := MustNew(t, url).Me(context.Background())
	wantCode(t, err, cove.Unavailable)
	if msg := cove.ErrorMessage(err); !strings.Contains(msg, url) || !strings.Contains(msg, "--server") {
		t.Fatalf("message %q should name %s and --server", msg, url)
	}
}

func TestAnswerThatIsNotCoves(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer srv.Close()
	_, err := MustNew(t, srv.URL).Me(context.Background())
	wantCode(t, err, cove.Unavailable)
	if msg := cove.ErrorMessage(err); !strings.Contains(msg, "502") {
		t.Fatalf("message %q should give the status", msg)
	}
}

func TestNewRejectsBadURLs(t *testing.T) {
	for _, url := range []string{"", "localhost:7100", "ftp://host", "http://", "http://host/?x=1"} {
		if _, err := sdk.New(url); cove.ErrorCode(err) != cove.Invalid {
			t.Errorf("New(%q): %v, want invalid", url, err)
		}
	}
}

// tamper breaks an access token's signature, so the server refuses it the
// way it refuses an expired one: 401.
func tamper(jwt string) string {
	last := jwt[len(jwt)-2]
	repl := byte('A')
	if last == 'A' {
		repl = 'B'
	}
	return jwt[:len(jwt)-2] + string(repl) + jwt[len(jwt)-1:]
}

func TestRefreshOn401(t *testing.T) {
	srv := sdktest.NewServer(t)
	ctx := context.Background()
	_, tokens := MustLogin(t, srv.URL, "ada@example.com")

	var got []*identity.Tokens
	c := MustNew(t, srv.URL, sdk.WithToken(tamper(tokens.AccessToken)), sdk.WithRefresh(tokens.RefreshToken, func(t *identity.Tokens) { got = append(got, t) }))
	me, err := c.Me(ctx)
	if err != nil {
		t.Fatalf("Me with a refused access token and a good refresh token: %v", err)
	}
	if me.Email != "ada@example.com" {
		t.Fatalf("Me = %+v", me)
	}
	if len(got) != 1 || got[0].RefreshToken == tokens.RefreshToken || got[0].AccessToken == "" {
		t.Fatalf("onRefresh got %+v, want one set of new tokens", got)
	}
	// The client keeps the new tokens: no further refresh.
	if _, err := c.Me(ctx); err != nil || len(got) != 1 {
		t.Fatalf("second Me: %v, refreshes %d", err, len(got))
	}
	// The old refresh token was rotated away.
	_, err = MustNew(t, srv.URL).Refresh(ctx, tokens.RefreshToken)
	wantCode(t, err, cove.Unauthenticated)
}

func TestRefreshOnceForConcurrentCalls(t *testing.T) {
	srv := sdktest.NewServer(t)
	ctx := context.Background()
	_, tokens := MustLogin(t, srv.URL, "ada@example.com")

	var refreshes atomic.Int32
	c := MustNew(t, srv.URL, sdk.WithToken(tamper(tokens.AccessToken)), sdk.WithRefresh(tokens.RefreshToken, func(*identity.Tokens) { refreshes.Add(1) }))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := c.Me(ctx)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Me: %v", err)
		}
	}
	// A second refresh with the same token would look like a replay and end
	// the session.
	if n := refreshes.Load(); n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}
}

func TestRefreshFailureIsUnauthenticated(t *testing.T) {
	srv := sdktest.NewServer(t)
	_, tokens := MustLogin(t, srv.URL, "ada@example.com")
	called := false
	c := MustNew(t, srv.URL, sdk.WithToken(tamper(tokens.AccessToken)), sdk.WithRefresh("cvr_not-a-real-token", func(*identity.Tokens) { called = true }))
	_, err := c.Me(context.Background())
	wantCode(t, err, cove.Unauthenticated)
	if called {
		t.Fatal("onRefresh called although the refresh failed")
	}
}

func TestPersonalAccessTokens(t *testing.T) {
	srv := sdktest.NewServer(t)
	ctx := context.Background()
	c, _ := MustLogin(t, srv.URL, "ada@example.com")

	created, err := c.CreateToken(ctx, httpapi.TokenInput{Name: "ci", ExpiresIn: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.Secret, created.Prefix) || created.Name != "ci" {
		t.Fatalf("CreateToken = %+v", created)
	}
	pat := MustNew(t, srv.URL, sdk.WithToken(created.Secret))
	if me, err := pat.Me(ctx); err != nil || me.Email != "ada@example.com" {
		t.Fatalf("Me with the token = %+v, %v", me, err)
	}
	wantCode(t, pat.Logout(ctx), cove.Invalid)

	ts, next, err := c.ListTokens(ctx, sdk.ListOptions{})
	if err != nil || len(ts) != 1 || ts[0].ID != created.ID || next != "" {
		t.Fatalf("ListTokens = %+v, %q, %v", ts, next, err)
	}
	if err := c.RevokeToken(ctx, created.ID); err != nil {
		t.Fatal(err)
	}
	_, err = pat.Me(ctx)
	wantCode(t, err, cove.Unauthenticated)
	wantCode(t, c.RevokeToken(ctx, "tok_00000000000000000000000000"), cove.NotFound)
}

func TestUsers(t *testing.T) {
	srv := sdktest.NewServer(t)
	ctx := context.Background()
	admin, _ := MustLogin(t, srv.URL, "admin@example.com")

	bob, err := admin.CreateUser(ctx, identity.SignupInput{Email: "bob@example.com", Name: "Bob", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	us, _, err := admin.ListUsers(ctx, sdk.UserFilter{Email: "BOB@example.com"})
	if err != nil || len(us) != 1 || us[0].ID != bob.ID {
		t.Fatalf("ListUsers(email) = %+v, %v", us, err)
	}
	if u, err := admin.SetUserDisabled(ctx, bob.ID, true); err != nil || !u.Disabled {
		t.Fatalf("SetUserDisabled(true) = %+v, %v", u, err)
	}
	_, err = MustNew(t, srv.URL).Login(ctx, identity.LoginInput{Email: "bob@example.com", Password: password})
	wantCode(t, err, cove.Unauthenticated)
	if u, err := admin.SetUserDisabled(ctx, bob.ID, false); err != nil || u.Disabled {
		t.Fatalf("SetUserDisabled(false) = %+v, %v", u, err)
	}
	if _, err := MustNew(t, srv.URL).Login(ctx, identity.LoginInput{Email: "bob@example.com", Password: password}); err != nil {
		t.Fatalf("login after enable: %v", err)
	}
}

func TestWorkspaceFlow(t *testing.T) {
	srv := sdktest.NewServer(t)
	ctx := context.Background()
	ada, _ := MustLogin(t, srv.URL, "ada@example.com")
	bob, _ := MustLogin(t, srv.URL, "bob@example.com")

	w, err := ada.CreateWorkspace(ctx, "Genomics")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ada.GetWorkspace(ctx, w.ID); err != nil || got.Name != "Genomics" {
		t.Fatalf("GetWorkspace = %+v, %v", got, err)
	}
	_, err = bob.GetWorkspace(ctx, w.ID)
	wantCode(t, err, cove.NotFound) // bob may not even know it exists

	if w, err = ada.RenameWorkspace(ctx, w.ID, "Genomics Lab"); err != nil || w.Name != "Genomics Lab" {
		t.Fatalf("RenameWorkspace = %+v, %v", w, err)
	}

	inv, err := ada.Invite(ctx, w.ID, "bob@example.com", workspace.Member)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Token == "" || inv.Role != workspace.Member {
		t.Fatalf("Invite = %+v", inv)
	}
	m, err := bob.AcceptInvitation(ctx, inv.Token)
	if err != nil {
		t.Fatal(err)
	}
	if m.WorkspaceID != w.ID || m.Role != workspace.Member || m.Email != "bob@example.com" {
		t.Fatalf("AcceptInvitation = %+v", m)
	}
	_, err = bob.AcceptInvitation(ctx, inv.Token)
	wantCode(t, err, cove.Conflict)

	ws, _, err := bob.ListWorkspaces(ctx, sdk.ListOptions{})
	if err != nil || len(ws) != 1 || ws[0].ID != w.ID || ws[0].Role != workspace.Member {
		t.Fatalf("bob's ListWorkspaces = %+v, %v", ws, err)
	}
	_, err = bob.RenameWorkspace(ctx, w.ID, "Mine now")
	wantCode(t, err, cove.Forbidden) // a member sees it but may not rename it

	if m, err = ada.ChangeRole(ctx, w.ID, m.UserID, workspace.Admin); err != nil || m.Role != workspace.Admin {
		t.Fatalf("ChangeRole = %+v, %v", m, err)
	}
	members, _, err := ada.ListMembers(ctx, w.ID, sdk.ListOptions{})
	if err != nil || len(members) != 2 {
		t.Fatalf("ListMembers = %+v, %v", members, err)
	}

	spare, err := ada.Invite(ctx, w.ID, "carol@example.com", workspace.Viewer)
	if err != nil {
		t.Fatal(err)
	}
	invs, _, err := ada.ListInvitations(ctx, w.ID, sdk.ListOptions{})
	if err != nil || len(invs) != 2 {
		t.Fatalf("ListInvitations = %+v, %v", invs, err)
	}
	if err := ada.RevokeInvitation(ctx, w.ID, spare.ID); err != nil {
		t.Fatal(err)
	}
	wantCode(t, ada.RevokeInvitation(ctx, w.ID, inv.ID), cove.Conflict) // already accepted

	if err := ada.RemoveMember(ctx, w.ID, m.UserID); err != nil {
		t.Fatal(err)
	}
	_, err = bob.GetWorkspace(ctx, w.ID)
	wantCode(t, err, cove.NotFound)

	entries, _, err := ada.ListAudit(ctx, sdk.AuditFilter{WorkspaceID: w.ID, Action: "workspace.member.invite"})
	if err != nil || len(entries) != 2 {
		t.Fatalf("ListAudit = %+v, %v", entries, err)
	}
	_, _, err = bob.ListAudit(ctx, sdk.AuditFilter{})
	wantCode(t, err, cove.Forbidden)

	if err := ada.DeleteWorkspace(ctx, w.ID); err != nil {
		t.Fatal(err)
	}
	_, err = ada.GetWorkspace(ctx, w.ID)
	wantCode(t, err, cove.NotFound)
}

func TestAllFollowsCursors(t *testing.T) {
	srv := sdktest.NewServer(t)
	ctx := context.Background()
	c, _ := MustLogin(t, srv.URL, "ada@example.com")
	var want []string
	for i := range 5 {
		w, err := c.CreateWorkspace(ctx, "ws "+string(rune('a'+i)))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, w.ID)
	}

	fetches := 0
	pages := func(ctx context.Context, o sdk.ListOptions) ([]*workspace.Workspace, string, error) {
		fetches++
		o.Limit = 2
		return c.ListWorkspaces(ctx, o)
	}
	var got []string
	for w, err := range sdk.All(ctx, pages) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, w.ID)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("All = %v, want %v", got, want)
	}
	if fetches != 3 {
		t.Fatalf("%d fetches for 5 items in pages of 2, want 3", fetches)
	}

	// Stopping early fetches no more pages.
	fetches = 0
	for range sdk.All(ctx, pages) {
		break
	}
	if fetches != 1 {
		t.Fatalf("%d fetches after break, want 1", fetches)
	}

	// An error ends the sequence.
	var errs int
	for _, err := range sdk.All(ctx, func(ctx context.Context, o sdk.ListOptions) ([]*workspace.Workspace, string, error) {
		return MustNew(t, srv.URL).ListWorkspaces(ctx, o)
	}) {
		wantCode(t, err, cove.Unauthenticated)
		errs++
	}
	if errs != 1 {
		t.Fatalf("%d errors yielded, want 1", errs)
	}
}

func TestHealthAndReady(t *testing.T) {
	srv := sdktest.NewServer(t)
	ctx := context.Background()
	c := MustNew(t, srv.URL)
	if err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	rd, err := c.Ready(ctx)
	if err != nil || !rd.Ready || rd.Checks["database"] != "ok" {
		t.Fatalf("Ready = %+v, %v", rd, err)
	}
}
