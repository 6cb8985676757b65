// Package natstest starts real nats-server processes for tests: the
// external deployment that `cove nats init` prepares, on a free port in the
// test's temporary directory, so that tests of the managed external mode
// run against the binary operators run and not the embedded server.
package natstest

import (
	"bytes"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/covecompute/cove/natsbus"
)

// Binary is the nats-server the tests run: Debian's package installs it in
// /usr/sbin, which is not always on PATH.
func Binary() string {
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	if p, err := exec.LookPath("/usr/sbin/nats-server"); err == nil {
		return p
	}
	return ""
}

// Server is a nats-server process of a deployment made by
// natsbus.InitExternal.
type Server struct {
	// Deployment is what InitExternal wrote; Config() is the control
	// plane's configuration for it.
	Deployment natsbus.Deployment

	tb     testing.TB
	binary string
	mu     sync.Mutex
	cmd    *exec.Cmd
	out    *bytes.Buffer
	exited chan struct{}
}

// StartExternal starts a managed external NATS and returns the control
// plane's configuration for it. It skips the test when nats-server is not
// installed.
func StartExternal(tb testing.TB) natsbus.Config {
	tb.Helper()
	return Start(tb).Deployment.Config()
}

// Start prepares a deployment in a temporary directory, listening on a
// free loopback port, starts nats-server on it and waits until it accepts
// the system user. The process is stopped when the test ends, and its
// output logged if the test failed. It skips the test when nats-server is
// not installed.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s := New(tb)
	s.Restart()
	return s
}

// New prepares a deployment as Start does without starting the server, for
// tests that change its files first; Restart starts it.
func New(tb testing.TB) *Server {
	tb.Helper()
	bin := Binary()
	if bin == "" {
		tb.Skip("nats-server is not installed (Debian package nats-server); external NATS tests skipped")
	}
	d, err := natsbus.InitExternal(tb.TempDir(), net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(tb))))
	if err != nil {
		tb.Fatalf("InitExternal: %v", err)
	}
	s := &Server{Deployment: d, tb: tb, binary: bin, out: &bytes.Buffer{}}
	tb.Cleanup(func() {
		s.Stop()
		if tb.Failed() {
			tb.Logf("nats-server output:\n%s", s.output())
		}
	})
	return s
}

// Restart starts the server: the first time after New, or again after
// Stop, on the same port and directory.
func (s *Server) Restart() {
	s.tb.Helper()
	s.mu.Lock()
	s.cmd = exec.Command(s.binary, "-c", s.Deployment.ServerConfig)
	s.cmd.Stdout, s.cmd.Stderr = lockedWriter{s}, lockedWriter{s}
	s.exited = make(chan struct{})
	cmd, exited := s.cmd, s.exited
	err := cmd.Start()
	s.mu.Unlock()
	if err != nil {
		s.tb.Fatalf("start nats-server: %v", err)
	}
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		nc, err := nats.Connect(s.Deployment.URL, nats.UserCredentials(s.Deployment.SystemCredsFile), nats.Timeout(time.Second))
		if err == nil {
			nc.Close()
			return
		}
		select {
		case <-exited:
			s.tb.Fatalf("nats-server exited at start:\n%s", s.output())
		default:
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("nats-server not ready after 15 s (last error %v):\n%s", err, s.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server gracefully (SIGTERM, SIGKILL after 10 s) and waits
// for it to exit. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

func (s *Server) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// lockedWriter appends the process's output under the server's lock.
type lockedWriter struct{ s *Server }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.out.Write(p)
}

// freePort returns a loopback port nothing listens on right now, never one
// a developer's own NATS or Cove may hold.
func freePort(tb testing.TB) int {
	tb.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port != 4222 && port != 7100 && port != 7422 && port != 8080 {
			return port
		}
	}
}
