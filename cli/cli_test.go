package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/cli"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/sdk/sdktest"
	"github.com/covecompute/cove/workspace"
)

const password = "correct horse battery"

// User is one person at one terminal: a config directory of their own.
type User struct {
	tb  testing.TB
	dir string
}

// Result is what one run of the CLI printed and its exit status.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// NewUser returns a user with an empty config directory. It clears the
// COVE_* variables so the developer's environment cannot leak in.
func NewUser(tb testing.TB) *User {
	tb.Helper()
	for _, v := range []string{cli.EnvServer, cli.EnvToken, cli.EnvConfigDir} {
		tb.Setenv(v, "")
	}
	return &User{tb: tb, dir: filepath.Join(tb.TempDir(), "cove")}
}

// Run runs `cove args...` in-process with stdin.
func (u *User) Run(stdin string, args ...string) Result {
	u.tb.Helper()
	var out, errb bytes.Buffer
	root := cli.New()
	root.SetArgs(append([]string{"--config-dir", u.dir}, args...))
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errb)
	err := root.ExecuteContext(context.Background())
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: cli.ExitCode(err)}
}

// MustRun runs the CLI and fails the test unless it exits 0.
func (u *User) MustRun(stdin string, args ...string) Result {
	u.tb.Helper()
	r := u.Run(stdin, args...)
	if r.Code != 0 {
		u.tb.Fatalf("cove %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// MustLogin signs the user up on server and logs in.
func (u *User) MustLogin(server, email string) {
	u.tb.Helper()
	u.MustRun(password+"\n", "--server", server, "signup", "--email", email, "--name", strings.Split(email, "@")[0], "--password-stdin")
	u.MustRun(password+"\n", "--server", server, "login", "--email", email, "--password-stdin")
}

func (u *User) credentials() map[string]any {
	u.tb.Helper()
	data, err := os.ReadFile(filepath.Join(u.dir, "credentials.json"))
	if err != nil {
		u.tb.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		u.tb.Fatal(err)
	}
	return m
}

func mustJSON[T any](tb testing.TB, s string) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		tb.Fatalf("output is not JSON: %v\n%s", err, s)
	}
	return v
}

type list[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor"`
}

func TestLoginFlow(t *testing.T) {
	srv := sdktest.NewServer(t)
	u := NewUser(t)

	r := u.MustRun(password+"\n", "--server", srv.URL, "signup", "--email", "ada@example.com", "--name", "Ada", "--password-stdin")
	if !strings.Contains(r.Stdout, "platform admin") || !strings.Contains(r.Stdout, "cove login --email ada@example.com") {
		t.Fatalf("signup printed %q", r.Stdout)
	}
	r = u.MustRun(password+"\n", "--server", srv.URL, "login", "--email", "ada@example.com", "--password-stdin")
	if !strings.Contains(r.Stdout, "Logged in to "+srv.URL+" as ada@example.com") {
		t.Fatalf("login printed %q", r.Stdout)
	}

	// The saved login is private and names the server, so later commands
	// need no --server.
	for path, want := range map[string]os.FileMode{u.dir: 0o700, filepath.Join(u.dir, "credentials.json"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %o, want %o", path, fi.Mode().Perm(), want)
		}
	}
	if creds := u.credentials(); creds["server"] != srv.URL || creds["email"] != "ada@example.com" || creds["refresh_token"] == "" {
		t.Fatalf("credentials = %v", creds)
	}

	r = u.MustRun("", "whoami")
	if !regexp.MustCompile(`email:\s+ada@example.com`).MatchString(r.Stdout) || !regexp.MustCompile(`admin:\s+yes`).MatchString(r.Stdout) {
		t.Fatalf("whoami printed %q", r.Stdout)
	}

	created := mustJSON[workspace.Workspace](t, u.MustRun("", "workspace", "create", "Genomics", "-o", "json").Stdout)
	if created.Name != "Genomics" || created.ID == "" {
		t.Fatalf("workspace create -o json = %+v", created)
	}
	ws := mustJSON[list[workspace.Workspace]](t, u.MustRun("", "workspace", "list", "-o", "json").Stdout)
	if len(ws.Items) != 1 || ws.Items[0].ID != created.ID || ws.Items[0].Role != workspace.Owner {
		t.Fatalf("workspace list -o json = %+v", ws)
	}
	r = u.MustRun("", "workspace", "list")
	if !regexp.MustCompile(`(?m)^ID\s+NAME\s+ROLE\s+CREATED\n` + created.ID + `\s+Genomics\s+owner\s`).MatchString(r.Stdout) {
		t.Fatalf("workspace list printed\n%s", r.Stdout)
	}

	// A personal access token: the secret alone on stdout, a warning on
	// stderr, and it works through COVE_TOKEN.
	r = u.MustRun("", "token", "create", "ci", "--expires", "1h")
	secret := strings.TrimSpace(r.Stdout)
	if !strings.HasPrefix(secret, "cvp_") || !strings.Contains(r.Stderr, "only time") {
		t.Fatalf("token create printed stdout %q stderr %q", r.Stdout, r.Stderr)
	}
	pat := NewUser(t) // no saved login at all
	t.Setenv(cli.EnvToken, secret)
	r = pat.MustRun("", "--server", srv.URL, "whoami", "-o", "json")
	if me := mustJSON[identity.User](t, r.Stdout); me.Email != "ada@example.com" {
		t.Fatalf("whoami with COVE_TOKEN = %+v", me)
	}
	t.Setenv(cli.EnvToken, "")

	tokens := mustJSON[list[identity.Token]](t, u.MustRun("", "token", "list", "-o", "json").Stdout)
	if len(tokens.Items) != 1 || tokens.Items[0].Name != "ci" {
		t.Fatalf("token list = %+v", tokens)
	}

	r = u.MustRun("", "logout")
	if _, err := os.Stat(filepath.Join(u.dir, "credentials.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("credentials after logout: %v", err)
	}
	r = u.Run("", "--server", srv.URL, "whoami")
	if r.Code != cli.ExitDenied || !strings.Contains(r.Stderr, "run `cove login`") {
		t.Fatalf("whoami after logout: exit %d, stderr %q", r.Code, r.Stderr)
	}
}

func TestBadPassword(t *testing.T) {
	srv := sdktest.NewServer(t)
	u := NewUser(t)
	u.MustLogin(srv.URL, "ada@example.com")

	r := u.Run("not the password\n", "login", "--email", "ada@example.com", "--password-stdin")
	if r.Code != cli.ExitDenied {
		t.Fatalf("exit %d, want %d; stderr %q", r.Code, cli.ExitDenied, r.Stderr)
	}
	if r.Stderr != "error: the email or password is wrong\n" || r.Stdout != "" {
		t.Fatalf("stdout %q, stderr %q", r.Stdout, r.Stderr)
	}
	// The failed login keeps the saved one.
	u.MustRun("", "whoami")
}

func TestExitCodes(t *testing.T) {
	srv := sdktest.NewServer(t)
	admin := NewUser(t)
	admin.MustLogin(srv.URL, "admin@example.com")
	u := NewUser(t)
	u.dir = filepath.Join(t.TempDir(), "user")
	u.MustLogin(srv.URL, "user@example.com")

	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()

	tests := []struct {
		name   string
		stdin  string
		args   []string
		code   int
		stderr string // a part of stderr
	}{
		{"unknown command", "", []string{"frobnicate"}, cli.ExitUsage, `unknown command "frobnicate"`},
		{"unknown subcommand", "", []string{"workspace", "lisst"}, cli.ExitUsage, "did you mean list?"},
		{"missing argument", "", []string{"workspace", "rename", "ws_x"}, cli.ExitUsage, "needs ID NAME"},
		{"unknown flag", "", []string{"whoami", "--colour"}, cli.ExitUsage, "unknown flag: --colour"},
		{"bad output", "", []string{"whoami", "-o", "yaml"}, cli.ExitUsage, "-o must be table or json"},
		{"bad role", "", []string{"workspace", "member", "invite", "ws_x", "b@example.com", "--role", "boss"}, cli.ExitUsage, `role "boss"`},
		{"bad duration", "", []string{"token", "create", "ci", "--expires", "soon"}, cli.ExitUsage, "--expires"},
		{"no password", "", []string{"login", "--email", "user@example.com"}, cli.ExitUsage, "--password-stdin"},
		{"invalid input", "", []string{"workspace", "create", " "}, cli.ExitUsage, "name is required"},
		{"not found", "", []string{"workspace", "get", "ws_00000000000000000000000000"}, cli.ExitNotFound, "not found"},
		{"forbidden", "", []string{"user", "list"}, cli.ExitDenied, "only platform admins"},
		{"conflict", password + "\n", []string{"signup", "--email", "admin@example.com", "--name", "Again", "--password-stdin"}, cli.ExitConflict, "error: "},
		{"unavailable", password + "\n", []string{"--server", down.URL, "login", "--email", "user@example.com", "--password-stdin"}, cli.ExitUnavailable, "check --server"},
		{"other server", "", []string{"--server", down.URL, "whoami"}, cli.ExitDenied, "you are logged in to " + srv.URL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := u.Run(tt.stdin, tt.args...)
			if r.Code != tt.code || !strings.Contains(r.Stderr, tt.stderr) || !strings.HasPrefix(r.Stderr, "error: ") {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", r.Code, r.Stderr, tt.code, tt.stderr)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	want := map[cove.Code]int{
		cove.Invalid: 2, cove.Unauthenticated: 3, cove.Forbidden: 3, cove.NotFound: 4,
		cove.Conflict: 5, cove.Unavailable: 6, cove.Internal: 1, cove.RateLimited: 1, cove.TooLarge: 1,
	}
	for _, code := range cove.Codes {
		if got := cli.ExitCode(cove.Errorf(code, "x")); got != want[code] {
			t.Errorf("ExitCode(%s) = %d, want %d", code, got, want[code])
		}
	}
	if cli.ExitCode(nil) != 0 || cli.ExitCode(errors.New("x")) != 1 {
		t.Error("ExitCode of nil or a plain error")
	}
}

func TestMembers(t *testing.T) {
	srv := sdktest.NewServer(t)
	ada := NewUser(t)
	ada.MustLogin(srv.URL, "ada@example.com")
	bob := NewUser(t)
	bob.dir = filepath.Join(t.TempDir(), "bob")
	bob.MustLogin(srv.URL, "bob@example.com")

	ws := mustJSON[workspace.Workspace](t, ada.MustRun("", "workspace", "create", "Lab", "-o", "json").Stdout)
	r := ada.MustRun("", "workspace", "member", "invite", ws.ID, "bob@example.com", "--role", "viewer")
	accept := regexp.MustCompile(`cove (workspace member accept cvi_\S+ --server \S+)`).FindStringSubmatch(r.Stdout)
	if accept == nil {
		t.Fatalf("invite printed no accept command:\n%s", r.Stdout)
	}
	// Bob runs exactly what he was sent.
	r = bob.MustRun("", strings.Fields(accept[1])...)
	if !strings.Contains(r.Stdout, "Joined workspace "+ws.ID+" as viewer") {
		t.Fatalf("accept printed %q", r.Stdout)
	}

	m := mustJSON[workspace.MemberInfo](t, ada.MustRun("", "workspace", "member", "role", ws.ID, "BOB@example.com", "admin", "-o", "json").Stdout)
	if m.Role != workspace.Admin || m.Email != "bob@example.com" {
		t.Fatalf("member role = %+v", m)
	}
	r = ada.MustRun("", "workspace", "member", "list", ws.ID)
	if !regexp.MustCompile(`bob@example.com\s+bob\s+admin`).MatchString(r.Stdout) {
		t.Fatalf("member list printed\n%s", r.Stdout)
	}
	invs := mustJSON[list[workspace.Invitation]](t, ada.MustRun("", "workspace", "invitation", "list", ws.ID, "-o", "json").Stdout)
	if len(invs.Items) != 1 || invs.Items[0].AcceptedAt == nil {
		t.Fatalf("invitation list = %+v", invs)
	}
	ada.MustRun("", "workspace", "member", "remove", ws.ID, "bob@example.com")
	if r := bob.Run("", "workspace", "get", ws.ID); r.Code != cli.ExitNotFound {
		t.Fatalf("bob's workspace get after removal: exit %d %s", r.Code, r.Stderr)
	}

	audit := mustJSON[list[map[string]any]](t, ada.MustRun("", "audit", "list", "--workspace", ws.ID, "--action", "workspace.member.invite", "-o", "json").Stdout)
	if len(audit.Items) != 1 {
		t.Fatalf("audit list = %+v", audit)
	}

	if r := ada.Run("", "workspace", "delete", ws.ID); r.Code != cli.ExitUsage || !strings.Contains(r.Stderr, "--yes") {
		t.Fatalf("delete without --yes and a terminal: exit %d, %q", r.Code, r.Stderr)
	}
	ada.MustRun("", "workspace", "delete", ws.ID, "--yes")
	if r := ada.Run("", "workspace", "get", ws.ID); r.Code != cli.ExitNotFound {
		t.Fatalf("get after delete: exit %d", r.Code)
	}
}

func TestPaging(t *testing.T) {
	srv := sdktest.NewServer(t)
	u := NewUser(t)
	u.MustLogin(srv.URL, "ada@example.com")
	for _, name := range []string{"one", "two", "three"} {
		u.MustRun("", "workspace", "create", name)
	}

	r := u.MustRun("", "workspace", "list", "--limit", "2")
	if n := strings.Count(r.Stdout, "\n"); n != 3 { // header and two rows
		t.Fatalf("first page has %d lines:\n%s", n, r.Stdout)
	}
	more := regexp.MustCompile(`--cursor (\S+)`).FindStringSubmatch(r.Stderr)
	if more == nil {
		t.Fatalf("no next cursor on stderr: %q", r.Stderr)
	}
	r = u.MustRun("", "workspace", "list", "--limit", "2", "--cursor", more[1])
	if !strings.Contains(r.Stdout, "three") || strings.Count(r.Stdout, "\n") != 2 || r.Stderr != "" {
		t.Fatalf("second page: stdout %q stderr %q", r.Stdout, r.Stderr)
	}
	all := mustJSON[list[workspace.Workspace]](t, u.MustRun("", "workspace", "list", "--all", "--limit", "2", "-o", "json").Stdout)
	if len(all.Items) != 3 || all.NextCursor != "" {
		t.Fatalf("--all = %+v", all)
	}
}

func TestRefreshedTokensAreSaved(t *testing.T) {
	srv := sdktest.NewServer(t)
	u := NewUser(t)
	u.MustLogin(srv.URL, "ada@example.com")

	// Break the saved access token as expiry would; the refresh token
	// still works.
	creds := u.credentials()
	oldRefresh := creds["refresh_token"]
	creds["access_token"] = "broken.access.token"
	data, _ := json.Marshal(creds)
	path := filepath.Join(u.dir, "credentials.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}

	u.MustRun("", "whoami")
	if got := u.credentials(); got["refresh_token"] == oldRefresh || got["access_token"] == "broken.access.token" {
		t.Fatalf("the renewed tokens were not saved: %v", got)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials mode after refresh: %v %v", fi.Mode(), err)
	}
	// The old refresh token is spent; the saved one keeps working.
	u.MustRun("", "whoami")
}

func TestSavedLoginGoesOnlyToItsServer(t *testing.T) {
	a := sdktest.NewServer(t)
	b := sdktest.NewServer(t)
	u := NewUser(t)
	u.MustLogin(a.URL, "ada@example.com")

	if r := u.Run("", "--server", b.URL, "whoami"); r.Code != cli.ExitDenied {
		t.Fatalf("whoami on another server: exit %d, stderr %q", r.Code, r.Stderr)
	}
	t.Setenv(cli.EnvServer, a.URL+"/")
	u.MustRun("", "whoami")
}
