package node_test

import (
	"context"
	"crypto/x509"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/computenode"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/node"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/scheduler"
	"github.com/covecompute/cove/sqlstore"
	"github.com/covecompute/cove/workspace"
)

const password = "correct horse battery"

// env is a running control plane with four people and two workspaces:
// admin (the platform admin), owner and member of workspace A, and
// outsider, owner of workspace B.
type env struct {
	m                              *app.Main
	ctx                            context.Context
	admin, owner, member, outsider cove.Principal
	wsA, wsB                       string
}

func newEnv(t testing.TB, e apptest.Engine) *env {
	t.Helper()
	m := apptest.StartEngine(t, e)
	v := &env{m: m, ctx: context.Background()}
	people := map[string]*cove.Principal{"admin": &v.admin, "owner": &v.owner, "member": &v.member, "outsider": &v.outsider}
	for _, name := range []string{"admin", "owner", "member", "outsider"} {
		u, err := m.Identity.Signup(v.ctx, cove.Principal{}, identity.SignupInput{Email: name + "@example.com", Name: name, Password: password})
		if err != nil {
			t.Fatal(err)
		}
		*people[name] = cove.Principal{UserID: u.ID, Email: u.Email, Admin: u.Admin}
	}
	if !v.admin.Admin {
		t.Fatal("the first account is not platform admin")
	}
	a, err := m.Workspace.Create(v.ctx, v.owner, "A")
	if err != nil {
		t.Fatal(err)
	}
	inv, err := m.Workspace.Invite(v.ctx, v.owner, a.ID, v.member.Email, workspace.Member)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Workspace.Accept(v.ctx, v.member, inv.Token); err != nil {
		t.Fatal(err)
	}
	b, err := m.Workspace.Create(v.ctx, v.outsider, "B")
	if err != nil {
		t.Fatal(err)
	}
	v.wsA, v.wsB = a.ID, b.ID
	return v
}

// fakeCreds issues made-up NATS credentials.
type fakeCreds struct{}

func (fakeCreds) IssueNodeCredential(nodeID, user string, expires time.Time) (string, string, error) {
	return "jwt of " + user + " for " + nodeID, "nats://127.0.0.1:4222", nil
}

func (fakeCreds) RevokeNodeCredential(string) error { return nil }

// fakeCerts issues made-up certificates that last a day.
type fakeCerts struct{}

func (fakeCerts) IssueNodeCertificate(_ context.Context, nodeID, csr string) (*node.Certificate, error) {
	return &node.Certificate{Serial: "01", PEM: "certificate of " + nodeID, NotAfter: time.Now().Add(24 * time.Hour)}, nil
}

func (fakeCerts) RenewNodeCertificate(_ context.Context, nodeID string, _ *x509.Certificate, csr string) (*node.Certificate, error) {
	return &node.Certificate{Serial: "02", PEM: "certificate of " + nodeID, NotAfter: time.Now().Add(24 * time.Hour)}, nil
}

// keys are the public keys every test enrollment sends.
var keys = sync.OnceValue(func() computenode.Keys {
	k, err := computenode.NewKeys("")
	if err != nil {
		panic(err)
	}
	return k
})

// fakeRuns is node.Runs over a few runs placed on one node: they run until
// something fails them, and each failure is sent on failed.
type fakeRuns struct {
	mu     sync.Mutex
	node   string
	states map[string]computation.State
	failed chan computation.RunUpdate
}

func newFakeRuns(ids ...string) *fakeRuns {
	r := &fakeRuns{states: map[string]computation.State{}, failed: make(chan computation.RunUpdate, 100)}
	for _, id := range ids {
		r.states[id] = computation.Running
	}
	return r
}

// place puts the runs on a node.
func (r *fakeRuns) place(nodeID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.node = nodeID
}

// restart makes every run run again, as if new ones had been placed.
func (r *fakeRuns) restart() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.states {
		r.states[id] = computation.Running
	}
}

func (r *fakeRuns) FindRunsOnNode(_ context.Context, nodeID string) ([]*computation.Run, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*computation.Run
	for id, st := range r.states {
		if nodeID == r.node && st.Active() {
			out = append(out, &computation.Run{ID: id, NodeID: nodeID, State: st})
		}
	}
	return out, nil
}

func (r *fakeRuns) Advance(_ context.Context, id string, to computation.State, u computation.RunUpdate) (*computation.Run, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := computation.Move(r.states[id], to, u.Reason); err != nil {
		return nil, err
	}
	r.states[id] = to
	if to == computation.Failed {
		r.failed <- u
	}
	return &computation.Run{ID: id, State: to}, nil
}

// wantFailed waits for n runs to fail with node_lost and a message
// containing msg.
func (r *fakeRuns) wantFailed(t *testing.T, n int, msg string) {
	t.Helper()
	for range n {
		select {
		case u := <-r.failed:
			if u.Reason != computation.NodeLost || !strings.Contains(u.Message, msg) {
				t.Fatalf("run failed with %+v, want node_lost and %q", u, msg)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no run failed")
		}
	}
}

func (r *fakeRuns) wantNoFailure(t *testing.T) {
	t.Helper()
	select {
	case u := <-r.failed:
		t.Fatalf("unexpected failure %+v", u)
	default:
	}
}

// schedRuns is scheduler.Runs that does nothing.
type schedRuns struct{}

func (schedRuns) Fail(context.Context, string, string, string) error        { return nil }
func (schedRuns) ActiveRuns(context.Context) ([]scheduler.ActiveRun, error) { return nil, nil }

// registry returns a node registry over the env's store and authorizer,
// with its own scheduler, runs and clock, as a second control plane would
// have. It is closed when the test ends, before the env's.
func (v *env) registry(t testing.TB, runs node.Runs, lostAfter time.Duration, now func() time.Time) (*node.Service, *scheduler.Scheduler) {
	t.Helper()
	sched := scheduler.New(schedRuns{}, nil, now)
	t.Cleanup(sched.Close)
	svc := node.NewService(sqlstore.NewNodeStore(v.m.DB), v.m.Authz, fakeCreds{}, fakeCerts{}, sched, runs, node.Config{LostAfter: lostAfter}, now)
	t.Cleanup(svc.Close)
	return svc, sched
}

// token creates an enrollment token as p.
func (v *env) token(t testing.TB, svc *node.Service, p cove.Principal, ws string, auto bool) *node.CreatedEnrollToken {
	t.Helper()
	tok, err := svc.CreateEnrollToken(v.ctx, p, ws, 0, auto)
	if err != nil {
		t.Fatalf("create enrollment token: %v", err)
	}
	return tok
}

func request(token, name string) runproto.EnrollRequest {
	return runproto.EnrollRequest{
		Token: token, Name: name, TEE: "none",
		Capacity: runproto.Resources{CPUs: 4, MemoryBytes: 8 << 30, DiskBytes: 100 << 30},
		Drivers:  []string{"wasm", "process"}, Labels: map[string]string{"zone": "eu-1"},
		CSR: keys().CSR, NATSUser: keys().NATSUser,
	}
}

// enroll enrolls a node with a new token made by p.
func (v *env) enroll(t testing.TB, svc *node.Service, p cove.Principal, ws string, auto bool, name string) string {
	t.Helper()
	rep, err := svc.Enroll(v.ctx, request(v.token(t, svc, p, ws, auto).Token, name))
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	return rep.NodeID
}

func wantCode(t *testing.T, err error, code cove.Code) {
	t.Helper()
	if got := cove.ErrorCode(err); got != code {
		t.Fatalf("error %v, want code %s", err, code)
	}
}

func heartbeat(id string) runproto.Heartbeat {
	return runproto.Heartbeat{NodeID: id, Time: time.Now(), Capacity: runproto.Resources{CPUs: 4, MemoryBytes: 8 << 30}, Drivers: []string{"wasm", "process"}}
}

func TestEnrollmentToken(t *testing.T) {
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			v := newEnv(t, e)
			svc := v.m.Nodes
			ctx := v.ctx

			tok := v.token(t, svc, v.admin, "", true)
			if !strings.HasPrefix(tok.Token, "cve_") || tok.TokenHash == "" || !tok.AutoApprove {
				t.Fatalf("token %+v", tok)
			}
			// What the node declares is checked before the token is spent.
			bad := request(tok.Token, "bad name!")
			_, err := svc.Enroll(ctx, bad)
			wantCode(t, err, cove.Invalid)

			rep, err := svc.Enroll(ctx, request(tok.Token, "edge-1"))
			if err != nil {
				t.Fatal(err)
			}
			if !cove.ValidID("node", rep.NodeID) || strings.ContainsAny(rep.NodeID, ".*>") || rep.JWT == "" || !strings.Contains(rep.Certificate, "BEGIN CERTIFICATE") || rep.NATSURL == "" || rep.Expires.Before(time.Now().Add(29*24*time.Hour)) {
				t.Fatalf("reply %+v", rep)
			}
			n, err := svc.Get(ctx, v.admin, rep.NodeID)
			if err != nil {
				t.Fatal(err)
			}
			if n.State != node.Active || n.WorkspaceID != "" || n.Name != "edge-1" || n.EnrollTokenID != tok.ID || n.Labels["zone"] != "eu-1" || n.Online {
				t.Fatalf("node %+v", n)
			}

			// Used twice: unauthenticated, and nothing is created.
			_, err = svc.Enroll(ctx, request(tok.Token, "edge-2"))
			wantCode(t, err, cove.Unauthenticated)
			if !strings.Contains(cove.ErrorMessage(err), "already used") {
				t.Fatalf("message %q", cove.ErrorMessage(err))
			}
			all, err := svc.List(ctx, v.admin, node.Filter{})
			if err != nil || len(all) != 1 {
				t.Fatalf("nodes %v %v, want one", all, err)
			}

			// Revoked.
			revoked := v.token(t, svc, v.admin, "", true)
			if err := svc.RevokeEnrollToken(ctx, v.admin, revoked.ID); err != nil {
				t.Fatal(err)
			}
			if err := svc.RevokeEnrollToken(ctx, v.admin, revoked.ID); err != nil {
				t.Fatalf("revoking twice: %v", err)
			}
			_, err = svc.Enroll(ctx, request(revoked.Token, "edge-3"))
			wantCode(t, err, cove.Unauthenticated)
			wantCode(t, svc.RevokeEnrollToken(ctx, v.admin, tok.ID), cove.Conflict) // used

			// Expired: the same store seen two hours later.
			later, _ := v.registry(t, newFakeRuns(), time.Minute, func() time.Time { return time.Now().Add(2 * time.Hour) })
			expired := v.token(t, svc, v.admin, "", true)
			_, err = later.Enroll(ctx, request(expired.Token, "edge-4"))
			wantCode(t, err, cove.Unauthenticated)
			if !strings.Contains(cove.ErrorMessage(err), "expired") {
				t.Fatalf("message %q", cove.ErrorMessage(err))
			}

			// Unknown and malformed tokens.
			for _, secret := range []string{"", "cve_nope", "cvp_" + strings.Repeat("x", 43), strings.Repeat("x", 5000)} {
				_, err = svc.Enroll(ctx, request(secret, "edge-5"))
				wantCode(t, err, cove.Unauthenticated)
			}

			// Two nodes racing for one token: exactly one gets in.
			race := v.token(t, svc, v.admin, "", false)
			var wg sync.WaitGroup
			errs := make([]error, 4)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = svc.Enroll(ctx, request(race.Token, "racer"))
				}()
			}
			wg.Wait()
			ok := 0
			for _, err := range errs {
				if err == nil {
					ok++
				} else if cove.ErrorCode(err) != cove.Unauthenticated {
					t.Errorf("racing enrollment: %v", err)
				}
			}
			if ok != 1 {
				t.Fatalf("%d racing enrollments succeeded, want 1: %v", ok, errs)
			}

			tokens, err := svc.ListEnrollTokens(ctx, v.admin, "", cove.Page{})
			if err != nil || len(tokens) != 4 {
				t.Fatalf("tokens %v %v, want 4", tokens, err)
			}
		})
	}
}

func TestValidateEnrollment(t *testing.T) {
	good := request("cve_x", "node-1.example_a")
	for name, f := range map[string]func(*runproto.EnrollRequest){
		"empty name":         func(r *runproto.EnrollRequest) { r.Name = "" },
		"name with space":    func(r *runproto.EnrollRequest) { r.Name = "a b" },
		"name with dot wild": func(r *runproto.EnrollRequest) { r.Name = "a.*" },
		"long name":          func(r *runproto.EnrollRequest) { r.Name = strings.Repeat("n", 64) },
		"name starts with -": func(r *runproto.EnrollRequest) { r.Name = "-n" },
		"no CPU":             func(r *runproto.EnrollRequest) { r.Capacity.CPUs = 0 },
		"too many CPUs":      func(r *runproto.EnrollRequest) { r.Capacity.CPUs = 5000 },
		"no memory":          func(r *runproto.EnrollRequest) { r.Capacity.MemoryBytes = 0 },
		"negative disk":      func(r *runproto.EnrollRequest) { r.Capacity.DiskBytes = -1 },
		"no driver":          func(r *runproto.EnrollRequest) { r.Drivers = nil },
		"unknown driver":     func(r *runproto.EnrollRequest) { r.Drivers = []string{"wasm", "docker"} },
		"unknown TEE":        func(r *runproto.EnrollRequest) { r.TEE = "sgx" },
		"TEE any":            func(r *runproto.EnrollRequest) { r.TEE = "any" },
		"label key empty":    func(r *runproto.EnrollRequest) { r.Labels = map[string]string{"": "x"} },
		"no CSR":             func(r *runproto.EnrollRequest) { r.CSR = "" },
		"CSR not PEM":        func(r *runproto.EnrollRequest) { r.CSR = "MIIB..." },
		"no NATS user":       func(r *runproto.EnrollRequest) { r.NATSUser = "" },
		"NATS account key":   func(r *runproto.EnrollRequest) { r.NATSUser = "A" + r.NATSUser[1:] },
		"NATS user odd":      func(r *runproto.EnrollRequest) { r.NATSUser = r.NATSUser[:55] + "!" },
		"label key odd":      func(r *runproto.EnrollRequest) { r.Labels = map[string]string{"a=b": "x"} },
		"label value odd":    func(r *runproto.EnrollRequest) { r.Labels = map[string]string{"a": "x,y"} },
		"label value long":   func(r *runproto.EnrollRequest) { r.Labels = map[string]string{"a": strings.Repeat("v", 64)} },
		"too many labels": func(r *runproto.EnrollRequest) {
			r.Labels = map[string]string{}
			for i := range 33 {
				r.Labels[strings.Repeat("k", i+1)] = "v"
			}
		},
	} {
		r := good
		f(&r)
		if _, err := node.ValidateEnrollment(r); cove.ErrorCode(err) != cove.Invalid || len(cove.ErrorDetails(err)) == 0 {
			t.Errorf("%s: %v, want invalid with details", name, err)
		}
	}
	good.Drivers, good.TEE, good.Labels = []string{"process", "wasm", "process"}, "", map[string]string{"topology.kubernetes.io/zone": "", "gpu": "a100"}
	r, err := node.ValidateEnrollment(good)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(r.Drivers, ",") != "process,wasm" || r.TEE != "none" || len(r.Labels) != 2 {
		t.Fatalf("normalized %+v", r)
	}
}

func TestEnrollTokenRights(t *testing.T) {
	v := newEnv(t, apptest.Engines()[0])
	svc, ctx := v.m.Nodes, v.ctx
	create := func(p cove.Principal, ws string) error {
		_, err := svc.CreateEnrollToken(ctx, p, ws, time.Hour, false)
		return err
	}
	cases := []struct {
		name string
		p    cove.Principal
		ws   string
		code cove.Code
	}{
		{"admin, platform", v.admin, "", ""},
		{"admin, a workspace", v.admin, v.wsA, ""},
		{"workspace owner, own workspace", v.owner, v.wsA, ""},
		{"workspace owner, platform", v.owner, "", cove.Forbidden},
		{"member, own workspace", v.member, v.wsA, cove.Forbidden},
		{"outsider, workspace A", v.outsider, v.wsA, cove.NotFound},
		{"unknown workspace", v.owner, "ws_nope", cove.NotFound},
		{"nobody", cove.Principal{}, "", cove.Unauthenticated},
	}
	for _, c := range cases {
		if err := create(c.p, c.ws); cove.ErrorCode(err) != c.code {
			t.Errorf("%s: %v, want %q", c.name, err, c.code)
		}
	}
	if _, err := svc.CreateEnrollToken(ctx, v.admin, "", 8*24*time.Hour, false); cove.ErrorCode(err) != cove.Invalid {
		t.Errorf("a week and a day: %v, want invalid", err)
	}

	wsTok := v.token(t, svc, v.owner, v.wsA, false)
	platTok := v.token(t, svc, v.admin, "", false)
	if _, err := svc.ListEnrollTokens(ctx, v.owner, v.wsA, cove.Page{}); err != nil {
		t.Errorf("owner lists A's tokens: %v", err)
	}
	_, err := svc.ListEnrollTokens(ctx, v.outsider, v.wsA, cove.Page{})
	wantCode(t, err, cove.NotFound)
	_, err = svc.ListEnrollTokens(ctx, v.owner, "", cove.Page{})
	wantCode(t, err, cove.Forbidden)
	// Tokens of scopes one may not manage are not disclosed.
	wantCode(t, svc.RevokeEnrollToken(ctx, v.outsider, wsTok.ID), cove.NotFound)
	wantCode(t, svc.RevokeEnrollToken(ctx, v.owner, platTok.ID), cove.NotFound)
	wantCode(t, svc.RevokeEnrollToken(ctx, v.member, wsTok.ID), cove.Forbidden)
	if err := svc.RevokeEnrollToken(ctx, v.owner, wsTok.ID); err != nil {
		t.Fatal(err)
	}
}

// TestWorkspaceAndPlatformNodes checks who sees and manages which node:
// a workspace token makes a node of that workspace, a platform token a
// platform node.
func TestWorkspaceAndPlatformNodes(t *testing.T) {
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			v := newEnv(t, e)
			svc, ctx := v.m.Nodes, v.ctx
			wsNode := v.enroll(t, svc, v.owner, v.wsA, false, "a-1")
			platNode := v.enroll(t, svc, v.admin, "", false, "p-1")

			n, err := svc.Get(ctx, v.owner, wsNode)
			if err != nil {
				t.Fatal(err)
			}
			if n.WorkspaceID != v.wsA || n.State != node.Pending {
				t.Fatalf("workspace node %+v", n)
			}
			ids := func(p cove.Principal, f node.Filter) string {
				t.Helper()
				ns, err := svc.List(ctx, p, f)
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, n := range ns {
					out = append(out, n.ID)
				}
				return strings.Join(out, ",")
			}
			for _, c := range []struct {
				who  string
				p    cove.Principal
				f    node.Filter
				want string
			}{
				{"admin", v.admin, node.Filter{}, wsNode + "," + platNode},
				{"admin, pending", v.admin, node.Filter{State: node.Pending}, wsNode + "," + platNode},
				{"admin, active", v.admin, node.Filter{State: node.Active}, ""},
				{"admin, workspace A", v.admin, node.Filter{WorkspaceID: v.wsA}, wsNode},
				{"owner", v.owner, node.Filter{}, wsNode},
				{"member", v.member, node.Filter{}, wsNode},
				{"member, workspace A", v.member, node.Filter{WorkspaceID: v.wsA}, wsNode},
				{"outsider", v.outsider, node.Filter{}, ""},
			} {
				if got := ids(c.p, c.f); got != c.want {
					t.Errorf("%s lists %q, want %q", c.who, got, c.want)
				}
			}
			_, err = svc.List(ctx, v.outsider, node.Filter{WorkspaceID: v.wsA})
			wantCode(t, err, cove.NotFound)
			_, err = svc.List(ctx, v.admin, node.Filter{State: "gone"})
			wantCode(t, err, cove.Invalid)

			for _, c := range []struct {
				name string
				err  error
				code cove.Code
			}{
				{"owner sees the platform node", get(svc, v, v.owner, platNode), cove.NotFound},
				{"outsider sees A's node", get(svc, v, v.outsider, wsNode), cove.NotFound},
				{"member sees A's node", get(svc, v, v.member, wsNode), ""},
				{"member approves", approve(svc, v, v.member, wsNode), cove.Forbidden},
				{"outsider approves", approve(svc, v, v.outsider, wsNode), cove.NotFound},
				{"owner approves the platform node", approve(svc, v, v.owner, platNode), cove.NotFound},
				{"malformed ID", get(svc, v, v.admin, "node_../x"), cove.NotFound},
				{"owner approves A's node", approve(svc, v, v.owner, wsNode), ""},
				{"admin approves the platform node", approve(svc, v, v.admin, platNode), ""},
				{"admin approves A's node again", approve(svc, v, v.admin, wsNode), ""},
			} {
				if cove.ErrorCode(c.err) != c.code {
					t.Errorf("%s: %v, want %q", c.name, c.err, c.code)
				}
			}

			n, err = svc.Drain(ctx, v.owner, wsNode)
			if err != nil || n.State != node.Draining {
				t.Fatalf("drain: %+v %v", n, err)
			}
			n, err = svc.Approve(ctx, v.owner, wsNode)
			if err != nil || n.State != node.Active || n.ApprovedBy != v.owner.UserID {
				t.Fatalf("approve after drain: %+v %v", n, err)
			}
			wantCode(t, svc.Remove(ctx, v.member, wsNode, false), cove.Forbidden)
			if err := svc.Remove(ctx, v.owner, wsNode, false); err != nil {
				t.Fatal(err)
			}
			wantCode(t, get(svc, v, v.admin, wsNode), cove.NotFound)
			wantCode(t, svc.Heartbeat(ctx, heartbeat(wsNode)), cove.NotFound)

			// Deleting a workspace takes its nodes with it.
			bNode := v.enroll(t, svc, v.outsider, v.wsB, true, "b-1")
			if err := v.m.Workspace.Delete(ctx, v.outsider, v.wsB); err != nil {
				t.Fatal(err)
			}
			wantCode(t, get(svc, v, v.admin, bNode), cove.NotFound)
		})
	}
}

func get(svc *node.Service, v *env, p cove.Principal, id string) error {
	_, err := svc.Get(v.ctx, p, id)
	return err
}

func approve(svc *node.Service, v *env, p cove.Principal, id string) error {
	_, err := svc.Approve(v.ctx, p, id)
	return err
}

// TestLostNode: a node that stops heartbeating is lost after LostAfter,
// leaves the scheduler and its runs fail with node_lost; its next
// heartbeat brings it back.
func TestLostNode(t *testing.T) {
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			v := newEnv(t, e)
			const lostAfter = 300 * time.Millisecond
			runs := newFakeRuns("run_1", "run_2")
			svc, sched := v.registry(t, runs, lostAfter, nil)
			ctx := v.ctx

			id := v.enroll(t, svc, v.admin, "", true, "edge")
			runs.place(id)
			if _, up := sched.NodeStats(id); up {
				t.Fatal("the scheduler has a node that never heartbeated")
			}
			if err := svc.Heartbeat(ctx, heartbeat(id)); err != nil {
				t.Fatal(err)
			}
			st, ok := sched.NodeStats(id)
			if !ok || !st.Up || st.Capacity.CPUs != 4 {
				t.Fatalf("scheduler after the first heartbeat: %+v %v", st, ok)
			}
			n, _ := svc.Get(ctx, v.admin, id)
			if !n.Online || n.State != node.Active || n.LastSeenAt == nil {
				t.Fatalf("node after a heartbeat %+v", n)
			}

			// Heartbeats keep it alive past LostAfter.
			for range 4 {
				time.Sleep(lostAfter / 3)
				if err := svc.Heartbeat(ctx, heartbeat(id)); err != nil {
					t.Fatal(err)
				}
			}
			runs.wantNoFailure(t)

			// Silence: lost, out of the scheduler, its runs failed.
			runs.wantFailed(t, 2, "sent no heartbeat for 300ms")
			n, _ = svc.Get(ctx, v.admin, id)
			if n.Online || n.State != node.Lost || n.LostAt == nil {
				t.Fatalf("node after silence %+v", n)
			}
			if st, ok := sched.NodeStats(id); ok && st.Up {
				t.Fatalf("the scheduler still places on a lost node: %+v", st)
			}
			if lost, _ := svc.List(ctx, v.admin, node.Filter{State: node.Lost}); len(lost) != 1 {
				t.Fatalf("lost nodes %v", lost)
			}

			// A heartbeat brings it back.
			if err := svc.Heartbeat(ctx, heartbeat(id)); err != nil {
				t.Fatal(err)
			}
			n, _ = svc.Get(ctx, v.admin, id)
			if !n.Online || n.State != node.Active || n.LostAt != nil {
				t.Fatalf("node after coming back %+v", n)
			}
			if st, ok := sched.NodeStats(id); !ok || !st.Up {
				t.Fatalf("scheduler after coming back: %+v", st)
			}
			if active, _ := svc.List(ctx, v.admin, node.Filter{State: node.Active}); len(active) != 1 {
				t.Fatalf("active nodes %v", active)
			}
			runs.wantNoFailure(t)
		})
	}
}

// TestLostAfterRestart: a control plane that starts arms a lost timer for
// every node that was alive, so one that never comes back is lost and its
// runs fail; and it fails the runs a crash left on nodes already lost.
func TestLostAfterRestart(t *testing.T) {
	v := newEnv(t, apptest.Engines()[0])
	const lostAfter = 200 * time.Millisecond
	runs := newFakeRuns("run_1")
	first, _ := v.registry(t, runs, time.Hour, nil)
	id := v.enroll(t, first, v.admin, "", true, "edge")
	runs.place(id)
	if err := first.Heartbeat(v.ctx, heartbeat(id)); err != nil {
		t.Fatal(err)
	}
	first.Close() // the control plane stops; the node goes on

	second, _ := v.registry(t, runs, lostAfter, nil)
	if err := second.Start(v.ctx); err != nil {
		t.Fatal(err)
	}
	runs.wantFailed(t, 1, "sent no heartbeat")
	second.Close()

	// The node is lost in the store; a run still active on it (a crash
	// between marking it lost and failing its runs) fails at start.
	runs.restart()
	third, _ := v.registry(t, runs, lostAfter, nil)
	if err := third.Start(v.ctx); err != nil {
		t.Fatal(err)
	}
	runs.wantFailed(t, 1, "sent no heartbeat")
	n, err := third.Get(v.ctx, v.admin, id)
	if err != nil || n.State != node.Lost {
		t.Fatalf("node %+v %v", n, err)
	}
}

func TestHeartbeat(t *testing.T) {
	v := newEnv(t, apptest.Engines()[0])
	svc, sched := v.registry(t, newFakeRuns(), time.Hour, nil)
	ctx := v.ctx
	wantCode(t, svc.Heartbeat(ctx, heartbeat("node.*")), cove.Invalid)
	wantCode(t, svc.Heartbeat(ctx, heartbeat("node_00000000000000000000000000")), cove.NotFound)

	// A pending node's heartbeat counts, but it waits for approval.
	id := v.enroll(t, svc, v.owner, v.wsA, false, "a-1")
	wantCode(t, svc.Heartbeat(ctx, heartbeat(id)), cove.Forbidden)
	n, _ := svc.Get(ctx, v.owner, id)
	if !n.Online || n.State != node.Pending {
		t.Fatalf("pending node %+v", n)
	}
	if _, ok := sched.NodeStats(id); ok {
		t.Fatal("the scheduler has a pending node")
	}
	// Approval of a live node gives it to the scheduler at once.
	if _, err := svc.Approve(ctx, v.owner, id); err != nil {
		t.Fatal(err)
	}
	if st, ok := sched.NodeStats(id); !ok || !st.Up || st.WorkspaceID != v.wsA {
		t.Fatalf("approved node in the scheduler: %+v %v", st, ok)
	}
	// The heartbeat lowers what the node offers, never raises it.
	hb := heartbeat(id)
	hb.Capacity = runproto.Resources{CPUs: 64, MemoryBytes: 2 << 30}
	hb.Drivers = []string{"wasm", "oci"}
	if err := svc.Heartbeat(ctx, hb); err != nil {
		t.Fatal(err)
	}
	if b := sched.Blockers(scheduler.Request{RunID: "r", WorkspaceID: v.wsA, Driver: "process", Resources: runproto.Resources{CPUs: 1, MemoryBytes: 1}}); len(b) != 1 || !strings.Contains(b[0], "process driver") {
		t.Fatalf("blockers %q, want the process driver missing", b)
	}
	if st, _ := sched.NodeStats(id); st.Capacity.CPUs != 4 || st.Capacity.MemoryBytes != 2<<30 {
		t.Fatalf("capacity %+v", st.Capacity)
	}
	// Draining takes it out of the scheduler; approving puts it back.
	if _, err := svc.Drain(ctx, v.owner, id); err != nil {
		t.Fatal(err)
	}
	if st, ok := sched.NodeStats(id); ok && st.Up {
		t.Fatal("a draining node takes runs")
	}
	if err := svc.Heartbeat(ctx, hb); err != nil {
		t.Fatal(err)
	}
	if st, ok := sched.NodeStats(id); ok && st.Up {
		t.Fatal("a draining node's heartbeat put it back")
	}
}

func TestRemoveWithActiveRuns(t *testing.T) {
	v := newEnv(t, apptest.Engines()[0])
	runs := newFakeRuns("run_1", "run_2")
	svc, sched := v.registry(t, runs, time.Hour, nil)
	id := v.enroll(t, svc, v.admin, "", true, "edge")
	runs.place(id)
	if err := svc.Heartbeat(v.ctx, heartbeat(id)); err != nil {
		t.Fatal(err)
	}
	err := svc.Remove(v.ctx, v.admin, id, false)
	wantCode(t, err, cove.Conflict)
	if !strings.Contains(cove.ErrorMessage(err), "2 active runs") {
		t.Fatalf("message %q", cove.ErrorMessage(err))
	}
	runs.wantNoFailure(t)
	if err := svc.Remove(v.ctx, v.admin, id, true); err != nil {
		t.Fatal(err)
	}
	runs.wantFailed(t, 2, "was removed by an admin")
	if _, ok := sched.NodeStats(id); ok {
		t.Fatal("the scheduler still knows a removed node")
	}
	wantCode(t, get(svc, v, v.admin, id), cove.NotFound)
	wantCode(t, svc.Heartbeat(v.ctx, heartbeat(id)), cove.NotFound)
}

// TestLastSeenWrittenInBatches: heartbeats reach last_seen_at in the store
// within a flush period, not at each heartbeat, and a node coming back
// from lost is written at once with lost_at cleared.
func TestLastSeenWrittenInBatches(t *testing.T) {
	v := newEnv(t, apptest.Engines()[0])
	const lostAfter = 600 * time.Millisecond // a flush every 200 ms
	svc, _ := v.registry(t, newFakeRuns(), lostAfter, nil)
	store := sqlstore.NewNodeStore(v.m.DB)
	id := v.enroll(t, svc, v.admin, "", true, "edge")
	stored := func() *node.Node {
		t.Helper()
		n, err := store.FindNodeByID(v.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := time.Now().Truncate(time.Second)
	if err := svc.Heartbeat(v.ctx, heartbeat(id)); err != nil {
		t.Fatal(err)
	}
	if n := stored(); n.LastSeenAt != nil {
		t.Fatalf("last_seen_at written at the heartbeat: %v", n.LastSeenAt)
	}
	deadline := time.Now().Add(5 * time.Second)
	for stored().LastSeenAt == nil {
		if time.Now().After(deadline) {
			t.Fatal("last_seen_at not written within 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := stored(); n.LastSeenAt.Before(before) || n.LastSeenAt.After(time.Now()) {
		t.Fatalf("last_seen_at %v, heartbeat after %v", n.LastSeenAt, before)
	}

	// Silence: lost in the store; a heartbeat clears it at once.
	deadline = time.Now().Add(5 * time.Second)
	for stored().LostAt == nil {
		if time.Now().After(deadline) {
			t.Fatal("the node was not marked lost")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := svc.Heartbeat(v.ctx, heartbeat(id)); err != nil {
		t.Fatal(err)
	}
	if n := stored(); n.LostAt != nil {
		t.Fatalf("lost_at %v after the node came back", n.LostAt)
	}
}
