package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app"
	"github.com/covecompute/cove/computenode"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sdk"
	"github.com/covecompute/cove/tlstrust"
)

// fleet starts `cove serve --dev` as a child process, reads its RSS when
// idle, enrolls many nodes through the HTTP API (as `cove node run` does),
// has a second child publish their heartbeats at the default interval,
// and reads the server's CPU time over a window (/proc/PID/stat) and its
// RSS with the nodes registered. Neither this process, which only enrolls
// and then sleeps, nor the publisher is counted: the server is measured
// from outside.
func fleet(ctx context.Context, r *runner, want map[string]bool) ([]Result, error) {
	nodes := r.size(10_000, 500)
	if r.o.Nodes > 0 {
		nodes = r.o.Nodes
	}
	dir, err := r.tempDir("fleet")
	if err != nil {
		return nil, err
	}
	srv, err := startServe(ctx, r, filepath.Join(dir, "server"))
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	var out []Result

	settle := time.Duration(r.size(20, 3)) * time.Second
	r.progress("memory: server %d up at %s; idle for %s", srv.cmd.Process.Pid, srv.url, settle)
	cpu0, w0 := procCPU(srv.cmd.Process.Pid), time.Now()
	if err := sleep(ctx, settle); err != nil {
		return nil, err
	}
	idle := 100 * (procCPU(srv.cmd.Process.Pid) - cpu0).Seconds() / time.Since(w0).Seconds()
	rss, err := procRSS(srv.cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	if want["heartbeat"] {
		out = append(out, figure("heartbeat", "server CPU, idle (its embedded node only)", idle, "% of a core"))
	}
	if want["memory"] {
		out = append(out, below("memory", "RSS of `cove serve --dev`, idle", float64(rss)/mib, "MiB", 100))
	}

	r.progress("heartbeat: enrolling %d nodes", nodes)
	c, err := srv.admin(ctx)
	if err != nil {
		return out, err
	}
	t0 := time.Now()
	credsFile := filepath.Join(dir, "nodes.jsonl")
	if err := enrollMany(ctx, c, nodes, credsFile, r); err != nil {
		return out, err
	}
	r.progress("heartbeat: %d nodes enrolled in %s", nodes, time.Since(t0).Round(time.Millisecond))
	if rss, err = procRSS(srv.cmd.Process.Pid); err != nil {
		return out, err
	}
	if want["memory"] {
		out = append(out, below("memory", fmt.Sprintf("RSS of `cove serve --dev`, %d nodes enrolled, not connected", nodes), float64(rss)/mib, "MiB", 500))
	}

	pub := exec.CommandContext(ctx, r.o.Exe, "bench", "heartbeats", "--nodes", credsFile)
	pub.Stderr = r.o.Progress
	pub.Env = append(os.Environ(), r.o.Env...)
	stdout, err := pub.StdoutPipe()
	if err != nil {
		return out, err
	}
	if err := pub.Start(); err != nil {
		return out, cove.Wrap(err, "cannot start the heartbeat publisher")
	}
	defer func() { _ = pub.Process.Signal(syscall.SIGTERM); _ = pub.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		return out, fmt.Errorf("the heartbeat publisher did not start: %q %v", line, err)
	}
	// Let every node heartbeat twice (the first makes the registry load
	// it), then measure.
	warm := 2*runproto.NodeHeartbeatInterval + 2*time.Second
	window := time.Duration(r.size(30, 8)) * time.Second
	r.progress("heartbeat: publisher up; warming up %s, measuring %s", warm, window)
	if err := sleep(ctx, warm); err != nil {
		return out, err
	}
	cpu0, w0 = procCPU(srv.cmd.Process.Pid), time.Now()
	if err := sleep(ctx, window); err != nil {
		return out, err
	}
	cpu1, w1 := procCPU(srv.cmd.Process.Pid), time.Now()
	share := 100 * (cpu1 - cpu0).Seconds() / w1.Sub(w0).Seconds()
	online, err := countOnline(ctx, c)
	if err != nil {
		return out, err
	}
	if want["heartbeat"] {
		out = append(out,
			below("heartbeat", fmt.Sprintf("server CPU, %d nodes heartbeating every %s", nodes, runproto.NodeHeartbeatInterval), share, "% of a core", 10),
			figure("heartbeat", "nodes online at the end", float64(online), "nodes"))
	}
	if online < nodes {
		return out, fmt.Errorf("only %d of %d simulated nodes are online", online, nodes)
	}
	if rss, err = procRSS(srv.cmd.Process.Pid); err != nil {
		return out, err
	}
	if want["memory"] {
		out = append(out, below("memory", fmt.Sprintf("RSS of `cove serve --dev`, %d nodes enrolled, connected and heartbeating", nodes), float64(rss)/mib, "MiB", 500))
	}
	return out, nil
}

// sleep waits for d, or less when ctx ends (an interrupted bench stops its
// children at once).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// serve is a `cove serve --dev` child.
type serve struct {
	r       *runner
	log     string // its stderr
	cmd     *exec.Cmd
	url     string
	dataDir string
	drop    func()
}

// startServe starts `cove serve --dev` in dataDir on free ports, with the
// options' configuration file and a scratch database on the options'
// PostgreSQL, and waits until it serves.
func startServe(ctx context.Context, r *runner, dataDir string) (*serve, error) {
	s := &serve{r: r, log: dataDir + ".log", dataDir: dataDir, drop: func() {}}
	args := []string{"serve", "--dev", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--log-level", "warn"}
	if r.o.ConfigFile != "" {
		args = append(args, "--config", r.o.ConfigFile)
	}
	if r.o.Config.NATS.URL == "" {
		args = append(args, "--nats-port", "-1")
	}
	if r.o.Config.Database.URL != "" {
		u, drop, err := scratchDB(ctx, r.o.Config.Database.URL)
		if err != nil {
			return nil, err
		}
		s.drop = drop
		args = append(args, "--database-url", u)
	}
	s.cmd = exec.Command(r.o.Exe, args...)
	s.cmd.Env = append(os.Environ(), r.o.Env...)
	logFile, err := os.Create(s.log)
	if err != nil {
		s.drop()
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	s.cmd.Stderr = logFile
	r.progress("starting cove serve --dev; its log: %s", logFile.Name())
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		s.drop()
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		s.drop()
		return nil, cove.Wrap(err, "cannot start cove serve")
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "Cove is running at "); ok {
				found <- strings.TrimSpace(u)
			}
		}
		close(found)
	}()
	select {
	case u, ok := <-found:
		if !ok {
			s.stop()
			return nil, fmt.Errorf("cove serve --dev exited before serving")
		}
		s.url = u
	case <-time.After(3 * time.Minute):
		s.stop()
		return nil, fmt.Errorf("cove serve --dev did not start in 3 minutes")
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
	return s, nil
}

// admin logs in as the seeded dev admin.
func (s *serve) admin(ctx context.Context) (*sdk.Client, error) {
	pw, err := os.ReadFile(filepath.Join(s.dataDir, "dev-admin-password"))
	if err != nil {
		return nil, cove.Wrap(err, "cannot read the dev admin's password")
	}
	// The dev server's HTTPS certificate comes from its own CA, whose
	// root it keeps in its data directory.
	trust, err := tlstrust.FileConfig(filepath.Join(s.dataDir, "ca", "root.pem"), "")
	if err != nil {
		return nil, err
	}
	c, err := sdk.New(s.url, sdk.WithHTTPClient(pooledClient(trust)))
	if err != nil {
		return nil, err
	}
	if _, err := c.Login(ctx, identity.LoginInput{Email: app.DevAdminEmail, Password: strings.TrimSpace(string(pw))}); err != nil {
		return nil, fmt.Errorf("log in as the dev admin: %w", err)
	}
	return c, nil
}

// stop ends the server, waits for it, and tells how many warnings and
// errors it logged: a benchmark should cause none, and its log goes with
// the temporary directory.
func (s *serve) stop() {
	defer s.reportLog()
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
	}
	s.drop()
}

func (s *serve) reportLog() {
	b, err := os.ReadFile(s.log)
	if err != nil {
		return
	}
	n, first := 0, ""
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			if n++; first == "" {
				first = line
			}
		}
	}
	if n > 0 {
		s.r.progress("cove serve logged %d warnings or errors; the first: %s", n, first)
	}
}

// enrolled is one line of the file enrollMany writes for the publisher.
type enrolled struct {
	NodeID  string `json:"node_id"`
	NATSURL string `json:"nats_url"`
	Creds   string `json:"creds"`
}

// enrollMany enrolls n auto-approved platform nodes of 4 CPUs with the
// wasm driver, 8 at a time, and writes their credentials to path, one
// JSON object a line.
func enrollMany(ctx context.Context, c *sdk.Client, n int, path string, r *runner) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var (
		mu    sync.Mutex
		enc   = json.NewEncoder(f)
		next  int
		first error
		wg    sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				stop := i >= n || first != nil
				mu.Unlock()
				if stop {
					return
				}
				e, err := enrollOne(ctx, c, i)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if err == nil {
					err = enc.Encode(e)
				}
				if (i+1)%1000 == 0 {
					r.progress("heartbeat: %d nodes enrolled", i+1)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return f.Sync()
}

func enrollOne(ctx context.Context, c *sdk.Client, i int) (enrolled, error) {
	tok, err := c.CreateEnrollToken(ctx, httpapi.EnrollTokenInput{AutoApprove: true})
	if err != nil {
		return enrolled{}, fmt.Errorf("enroll token: %w", err)
	}
	// The keys a real node makes: a certificate request and a NATS nkey.
	keys, err := computenode.NewKeys("")
	if err != nil {
		return enrolled{}, fmt.Errorf("node keys: %w", err)
	}
	rep, err := c.EnrollNode(ctx, runproto.EnrollRequest{
		Token: tok.Token, Name: fmt.Sprintf("sim-%05d", i), TEE: "none", Drivers: []string{"wasm"},
		Capacity: runproto.Resources{CPUs: 4, MemoryBytes: 8 << 30, DiskBytes: 64 << 30},
		CSR:      keys.CSR, NATSUser: keys.NATSUser,
	})
	if err != nil {
		return enrolled{}, fmt.Errorf("enroll: %w", err)
	}
	creds, err := jwt.FormatUserConfig(rep.JWT, keys.NATSSeed)
	if err != nil {
		return enrolled{}, fmt.Errorf("node credential: %w", err)
	}
	return enrolled{NodeID: rep.NodeID, NATSURL: rep.NATSURL, Creds: string(creds)}, nil
}

// countOnline counts the online nodes the server lists.
func countOnline(ctx context.Context, c *sdk.Client) (int, error) {
	n := 0
	opts := sdk.ListOptions{Limit: 100}
	for {
		nodes, next, err := c.ListNodes(ctx, sdk.NodeFilter{}, opts)
		if err != nil {
			return n, fmt.Errorf("list nodes: %w", err)
		}
		for _, nd := range nodes {
			if nd.Online {
				n++
			}
		}
		if next == "" {
			return n, nil
		}
		opts.Cursor = next
	}
}
