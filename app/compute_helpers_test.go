package app_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/computenode"
	"github.com/covecompute/cove/config"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/node"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sdk"
	"github.com/covecompute/cove/workspace"
)

// pollEvery is how often the compute tests ask the API while they wait.
const pollEvery = 50 * time.Millisecond

// cluster is a real control plane and its platform admin (the first user
// who signed up), for the compute end-to-end tests.
type cluster struct {
	cfg   config.Config
	m     *app.Main
	admin *user
}

// startCluster starts a control plane on engine e; tune, when not nil,
// adjusts the configuration first.
func startCluster(t *testing.T, e apptest.Engine, tune func(*config.Config)) *cluster {
	t.Helper()
	cfg := apptest.Config(t.TempDir(), e.URL(t))
	if tune != nil {
		tune(&cfg)
	}
	c := &cluster{cfg: cfg, m: apptest.Start(t, cfg)}
	trustCA(t, c.m)
	c.admin = newUser(t, c.m.URL, "root@platform.example")
	me, err := c.admin.Me(context.Background())
	if err != nil || !me.Admin {
		t.Fatalf("the first user is not the platform admin: %+v %v", me, err)
	}
	return c
}

// restart stops the control plane and starts it again with the same
// configuration: data dir, database and (when the test fixed them) ports.
func (c *cluster) restart(t *testing.T) {
	t.Helper()
	if err := c.m.Close(); err != nil {
		t.Fatalf("close the control plane: %v", err)
	}
	c.m = apptest.Start(t, c.cfg)
	trustCA(t, c.m)
}

// startNode enrolls a new `cove node run` process, with a platform token
// the admin creates through the SDK, and waits until it is online. args
// are more flags of `cove node run`.
func (c *cluster) startNode(t *testing.T, name string, args ...string) (*nodeProc, *node.Node) {
	t.Helper()
	tok, err := c.admin.CreateEnrollToken(context.Background(), httpapi.EnrollTokenInput{AutoApprove: true})
	if err != nil {
		t.Fatalf("create an enrollment token: %v", err)
	}
	p := startNodeProc(t, t.TempDir(), name, []string{computenode.EnvToken + "=" + tok.Token}, append([]string{"--server", c.m.URL}, args...)...)
	n := waitNode(t, c.admin, p, "online and active", func(n *node.Node) bool { return n.Online && n.State == node.Active })
	return p, n
}

// user is a signed-in SDK client.
type user struct {
	*sdk.Client
	ID    string
	Email string
	Token string // the access token, for raw HTTP calls
}

func newUser(t *testing.T, url, email string) *user {
	t.Helper()
	ctx := context.Background()
	name, _, _ := strings.Cut(email, "@")
	u, err := client(t, url).Signup(ctx, identity.SignupInput{Email: email, Name: name, Password: pw})
	if err != nil {
		t.Fatalf("signup %s: %v", email, err)
	}
	c := client(t, url)
	tok, err := c.Login(ctx, identity.LoginInput{Email: email, Password: pw})
	if err != nil {
		t.Fatalf("login %s: %v", email, err)
	}
	return &user{Client: c, ID: u.ID, Email: email, Token: tok.AccessToken}
}

// join makes u a member of workspace ws with role, invited by admin.
func join(t *testing.T, admin, u *user, ws string, role workspace.Role) {
	t.Helper()
	ctx := context.Background()
	inv, err := admin.Invite(ctx, ws, u.Email, role)
	if err != nil {
		t.Fatalf("invite %s: %v", u.Email, err)
	}
	if _, err := u.AcceptInvitation(ctx, inv.Token); err != nil {
		t.Fatalf("%s accepts: %v", u.Email, err)
	}
}

// nodeProc is a `cove node run` process: the test binary re-executed by
// TestMain as the cove command.
type nodeProc struct {
	dir, name string
	cmd       *exec.Cmd
	out       *syncBuffer
	exited    chan struct{}
	err       error // of Wait, once exited is closed
}

// startNodeProc starts `cove node run` on data dir dir with the wasm
// driver and room for several runs at once; env adds variables, args
// flags. The process is killed when the test ends, and its output logged
// if the test failed.
func startNodeProc(t *testing.T, dir, name string, env []string, args ...string) *nodeProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	all := append([]string{"node", "run", "--data-dir", dir, "--name", name, "--drivers", "wasm",
		"--cpus", "8", "--memory", "8GiB", "--disk", "8GiB", "--log-level", "info"}, args...)
	b, _ := json.Marshal(all)
	p := &nodeProc{dir: dir, name: name, out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(exe)
	p.cmd.Env = append(os.Environ(), envRunCove+"=1", envCoveArgs+"="+string(b), "COVE_CONFIG_DIR="+t.TempDir())
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	dieWithTest(p.cmd)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start the node process: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("output of node process %s (pid %d):\n%s", name, p.cmd.Process.Pid, p.out.String())
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *nodeProc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// gone reports whether the process has exited.
func (p *nodeProc) gone() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor calls f every pollEvery until it reports done, and fails t after
// timeout with what and f's last error.
func waitFor(t *testing.T, timeout time.Duration, what string, f func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		done, err := f()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s (last error: %v)", timeout, what, err)
		}
		<-tick.C
	}
}

// waitNode waits until the node process p shows in the registry in a state
// cond accepts, and fails at once if the process exits.
func waitNode(t *testing.T, admin *user, p *nodeProc, what string, cond func(*node.Node) bool) *node.Node {
	t.Helper()
	var got *node.Node
	waitFor(t, 60*time.Second, "node "+p.name+" "+what, func() (bool, error) {
		if p.gone() {
			t.Fatalf("node process %s exited: %v\n%s", p.name, p.err, p.out.String())
		}
		nodes, _, err := admin.ListNodes(context.Background(), sdk.NodeFilter{}, sdk.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, n := range nodes {
			if n.Name == p.name && cond(n) {
				got = n
				return true, nil
			}
		}
		return false, nil
	})
	return got
}

// waitRun waits until run id is in a state cond accepts.
func waitRun(t *testing.T, c *user, id string, timeout time.Duration, what string, cond func(*computation.Run) bool) *computation.Run {
	t.Helper()
	var got *computation.Run
	waitFor(t, timeout, "run "+id+" "+what, func() (bool, error) {
		r, err := c.GetRun(context.Background(), id)
		if err != nil {
			return false, err
		}
		got = r
		return cond(r), fmt.Errorf("it is %s %s %s", r.State, r.Reason, r.Message)
	})
	return got
}

// waitEnd waits until run id has ended.
func waitEnd(t *testing.T, c *user, id string, timeout time.Duration) *computation.Run {
	t.Helper()
	return waitRun(t, c, id, timeout, "to end", func(r *computation.Run) bool { return r.State.Terminal() })
}

// readLogs reads a run's log lines without following.
func readLogs(t *testing.T, c *user, id string) []runproto.LogLine {
	t.Helper()
	var lines []runproto.LogLine
	if _, err := c.Logs(context.Background(), id, sdk.LogOptions{}, func(l runproto.LogLine) error {
		lines = append(lines, l)
		return nil
	}); err != nil {
		t.Fatalf("logs of %s: %v", id, err)
	}
	return lines
}

// rawLogs reads GET /runs/{id}/logs as the bytes on the wire.
func rawLogs(t *testing.T, base string, c *user, id string) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/api/v1/runs/"+id+"/logs?follow=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Accept", "text/event-stream")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("GET logs: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET logs: %d %v: %s", resp.StatusCode, err, b)
	}
	return b
}

// openResult downloads a run's sealed result, checks it against the run's
// digest and decrypts it with id into a new directory.
func openResult(t *testing.T, c *user, run *computation.Run, id age.Identity) string {
	t.Helper()
	res, err := c.OpenResult(context.Background(), run.ID)
	if err != nil {
		t.Fatalf("open the result: %v", err)
	}
	sealed, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("download the result: %v", err)
	}
	sum := sha256.Sum256(sealed)
	if got := hex.EncodeToString(sum[:]); got != run.ResultSHA256 || res.SHA256 != run.ResultSHA256 || int64(len(sealed)) != run.ResultSize {
		t.Fatalf("result: %d bytes hashing to %s (header %s), the run says %d bytes, %s", len(sealed), got, res.SHA256, run.ResultSize, run.ResultSHA256)
	}
	plain, err := age.Decrypt(bytes.NewReader(sealed), id)
	if err != nil {
		t.Fatalf("decrypt the result: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "result")
	if err := blob.ExtractTar(plain, dir, 256<<20); err != nil {
		t.Fatalf("unpack the result: %v", err)
	}
	return dir
}

// wantErr checks err's code without stopping the test.
func wantErr(t *testing.T, what string, err error, code cove.Code) {
	t.Helper()
	if cove.ErrorCode(err) != code {
		t.Errorf("%s: error %v, want %s", what, err, code)
	}
}

// lab is a workspace with a dataset that lets any algorithm run, for the
// tests that run samples rather than check policies.
type lab struct {
	owner *user
	ws    string
	data  *catalog.Dataset
	key   *age.X25519Identity
}

func newLab(t *testing.T, owner *user) *lab {
	t.Helper()
	ctx := context.Background()
	ws, err := owner.CreateWorkspace(ctx, "lab")
	if err != nil {
		t.Fatal(err)
	}
	text := []byte("the quick brown fox\njumps over the lazy dog\n")
	ds, err := owner.UploadDataset(ctx, ws.ID, catalog.DatasetUpload{Name: "text", FileName: "text.txt"}, bytes.NewReader(text), int64(len(text)), nil)
	if err != nil {
		t.Fatalf("upload the dataset: %v", err)
	}
	if ds, err = owner.SetDatasetPolicy(ctx, ds.ID, catalog.Policy{AllowAnyAlgorithm: true}); err != nil {
		t.Fatalf("set the policy: %v", err)
	}
	key, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return &lab{owner: owner, ws: ws.ID, data: ds, key: key}
}

// algorithm uploads a wasm module.
func (l *lab) algorithm(t *testing.T, name string, module []byte) *catalog.Algorithm {
	t.Helper()
	a, err := l.owner.UploadAlgorithm(context.Background(), l.ws, catalog.AlgorithmUpload{Name: name, Kind: catalog.KindWasm, FileName: name + ".wasm"},
		bytes.NewReader(module), int64(len(module)), nil)
	if err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
	return a
}

// run creates a computation of alg over the lab's dataset with the owner
// as result consumer, and starts a run of it.
func (l *lab) run(t *testing.T, alg *catalog.Algorithm, limits computation.Limits, args ...string) (*computation.Computation, *computation.Run) {
	t.Helper()
	ctx := context.Background()
	c, err := l.owner.CreateComputation(ctx, l.ws, computation.Spec{
		AlgorithmID:     alg.ID,
		Args:            args,
		Datasets:        []computation.DatasetRef{{Name: "data", DatasetID: l.data.ID}},
		ResultConsumers: []computation.ResultConsumer{{UserID: l.owner.ID, Recipient: l.key.Recipient().String()}},
		Limits:          limits,
	})
	if err != nil {
		t.Fatalf("create a computation of %s %v: %v", alg.Name, args, err)
	}
	r, err := l.owner.StartRun(ctx, c.ID)
	if err != nil {
		t.Fatalf("start %s %v: %v", alg.Name, args, err)
	}
	return c, r
}

// readFile reads a file or fails t.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// freePort returns a loopback TCP port nothing listens on right now, never
// one of the ports a developer's own Cove or NATS may hold.
func freePort(t *testing.T) int {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port != 4222 && port != 7100 && port != 7422 {
			return port
		}
	}
}

// finalLogLines reads the log line count of a run's last agent event from
// RUN_EVENTS, as the control plane's log followers do; -1 when there is
// none.
func finalLogLines(t *testing.T, bus *natsbus.Bus, runID string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := bus.JetStream().Stream(ctx, natsbus.StreamRunEvents)
	if err != nil {
		t.Fatalf("stream %s: %v", natsbus.StreamRunEvents, err)
	}
	raw, err := s.GetLastMsgForSubject(ctx, natsbus.RunEvents(runID))
	if err != nil {
		return -1
	}
	var ev runproto.Event
	if err := json.Unmarshal(raw.Data, &ev); err != nil || !computation.State(ev.State).Terminal() {
		return -1
	}
	return ev.LogLines
}

// tickerSource prints "tick I" every DURATION, N times, then writes
// /cove/outputs/ticks.txt: a run that logs slowly and then finishes.
const tickerSource = `package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	n, err := strconv.Atoi(os.Args[1])
	if err != nil {
		os.Exit(64)
	}
	every, err := time.ParseDuration(os.Args[2])
	if err != nil {
		os.Exit(64)
	}
	for i := 1; i <= n; i++ {
		fmt.Printf("tick %d\n", i)
		time.Sleep(every)
	}
	if err := os.WriteFile("/cove/outputs/ticks.txt", []byte(strconv.Itoa(n)+"\n"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
`

var ticker struct {
	once sync.Once
	wasm []byte
	err  error
}

// tickerWasm builds tickerSource for wasip1 once per process, and keeps
// the module next to the samples' builds, named by a digest of the source
// and the Go version, so later runs reuse it.
func tickerWasm(t *testing.T) []byte {
	t.Helper()
	ticker.once.Do(func() {
		sum := sha256.Sum256([]byte(runtime.Version() + "\x00" + tickerSource))
		out := filepath.Join(os.TempDir(), "cove-samples", "e2e-ticker-"+hex.EncodeToString(sum[:8])+".wasm")
		if b, err := os.ReadFile(out); err == nil {
			ticker.wasm = b
			return
		}
		work, err := os.MkdirTemp("", "cove-ticker-")
		if err != nil {
			ticker.err = err
			return
		}
		defer os.RemoveAll(work)
		for name, content := range map[string]string{"go.mod": "module example.com/ticker\n\ngo 1.22\n", "main.go": tickerSource} {
			if ticker.err = os.WriteFile(filepath.Join(work, name), []byte(content), 0o644); ticker.err != nil {
				return
			}
		}
		if ticker.err = os.MkdirAll(filepath.Dir(out), 0o755); ticker.err != nil {
			return
		}
		tmp := out + ".tmp" + strconv.Itoa(os.Getpid())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", tmp, ".")
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=", "GOTOOLCHAIN=local", "GOPROXY=off")
		if b, err := cmd.CombinedOutput(); err != nil {
			ticker.err = fmt.Errorf("go build: %v: %s", err, b)
			return
		}
		if ticker.err = os.Rename(tmp, out); ticker.err != nil {
			return
		}
		ticker.wasm, ticker.err = os.ReadFile(out)
	})
	if ticker.err != nil {
		t.Fatalf("build the ticker module: %v", ticker.err)
	}
	return ticker.wasm
}
