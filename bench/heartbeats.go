package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
)

// Publish simulates the nodes listed in path (JSON lines of node ID, NATS
// URL and credential, as the fleet scenario writes them): it opens one
// NATS connection per node with the node's own credential, writes "ready"
// to ready, and publishes each node's heartbeat every interval, spread
// evenly, until ctx ends.
//
// It speaks the NATS client protocol itself on plain sockets from one
// goroutine, instead of running a nats.go client per node, which would
// hold two goroutines and two buffers per node: 10,000 simulated nodes
// then cost the machine little beyond what the server spends on them.
// Nothing is read back but the server's PINGs, answered every 30 seconds.
func Publish(ctx context.Context, path string, interval time.Duration, ready io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return cove.Errorf(cove.Invalid, "cannot read the node list: %v", err)
	}
	defer f.Close()
	var list []enrolled
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e enrolled
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return cove.Errorf(cove.Invalid, "line %d of the node list is not a node: %v", len(list)+1, err)
		}
		list = append(list, e)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	conns := make([]*simNode, len(list))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.conn.Close()
			}
		}
	}()
	// Connecting is the slow part (the server verifies each node's JWT):
	// 8 at a time. Publishing is one goroutine.
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make([]error, len(list))
	)
	for range 8 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(list); i = int(next.Add(1)) - 1 {
				if conns[i], errs[i] = dialNode(ctx, list[i]); errs[i] != nil {
					errs[i] = fmt.Errorf("node %s: %w", list[i].NodeID, errs[i])
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if len(conns) == 0 {
		return cove.Errorf(cove.Invalid, "the node list %s is empty", path)
	}
	fmt.Fprintf(ready, "ready %d\n", len(conns))

	// Ticks of 10 ms, each publishing its share of the nodes.
	const tick = 10 * time.Millisecond
	perTick := max(1, len(conns)*int(tick)/int(interval))
	t := time.NewTicker(tick)
	defer t.Stop()
	lastPong := time.Now()
	for i := 0; ; {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for range perTick {
			if err := conns[i].beat(); err != nil {
				return fmt.Errorf("node %s: %w", conns[i].id, err)
			}
			i = (i + 1) % len(conns)
		}
		if time.Since(lastPong) > 30*time.Second {
			for _, c := range conns {
				c.pong()
			}
			lastPong = time.Now()
		}
	}
}

// simNode is one simulated node's connection.
type simNode struct {
	id   string
	conn net.Conn
	r    *bufio.Reader
	subj string
	buf  []byte
}

// dialNode connects as node e: INFO, CONNECT signed with the node's key,
// SUB to its commands, PING, and a PONG back, or the server's -ERR.
func dialNode(ctx context.Context, e enrolled) (*simNode, error) {
	u, err := url.Parse(e.NATSURL)
	if err != nil || u.Host == "" {
		return nil, cove.Errorf(cove.Invalid, "bad NATS URL %q", e.NATSURL)
	}
	token, err := jwt.ParseDecoratedJWT([]byte(e.Creds))
	if err != nil {
		return nil, cove.Errorf(cove.Invalid, "no NATS credential: %v", err)
	}
	kp, err := nkeys.ParseDecoratedNKey([]byte(e.Creds))
	if err != nil {
		return nil, cove.Errorf(cove.Invalid, "no NATS key: %v", err)
	}
	defer kp.Wipe()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	n := &simNode{id: e.NodeID, conn: conn, r: bufio.NewReaderSize(conn, 4096), subj: natsbus.NodeHeartbeat(e.NodeID)}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	line, err := n.r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	info, found := strings.CutPrefix(line, "INFO ")
	if !found {
		return nil, fmt.Errorf("the server sent %q, not INFO", line)
	}
	var si struct {
		Nonce       string `json:"nonce"`
		TLSRequired bool   `json:"tls_required"`
	}
	if err := json.Unmarshal([]byte(info), &si); err != nil {
		return nil, err
	}
	if si.TLSRequired {
		return nil, cove.Errorf(cove.Unavailable, "the NATS server requires TLS, which the heartbeat simulator does not speak")
	}
	sig, err := kp.Sign([]byte(si.Nonce))
	if err != nil {
		return nil, err
	}
	connect, _ := json.Marshal(map[string]any{
		"verbose": false, "pedantic": false, "protocol": 1, "lang": "go", "version": "cove-bench",
		"name": "cove bench node " + e.NodeID, "jwt": token, "sig": base64.RawURLEncoding.EncodeToString(sig),
	})
	// Like a real node, it listens for commands, so the server holds a
	// subscription per node.
	if _, err := fmt.Fprintf(conn, "CONNECT %s\r\nSUB %s 1\r\nPING\r\n", connect, natsbus.NodeControl(e.NodeID)); err != nil {
		return nil, err
	}
	for {
		line, err := n.r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		switch {
		case strings.HasPrefix(line, "PONG"):
			_ = conn.SetDeadline(time.Time{})
			ok = true
			return n, nil
		case strings.HasPrefix(line, "-ERR"):
			return nil, cove.Errorf(cove.Unauthenticated, "NATS refused the node: %s", strings.TrimSpace(line))
		}
	}
}

// beat publishes one heartbeat with the node's enrolled capacity, no runs
// and the wasm driver.
func (n *simNode) beat() error {
	body, _ := json.Marshal(runproto.Heartbeat{NodeID: n.id, Time: time.Now().UTC(), Drivers: []string{"wasm"},
		Capacity: runproto.Resources{CPUs: 4, MemoryBytes: 8 << 30, DiskBytes: 64 << 30}})
	n.buf = fmt.Appendf(n.buf[:0], "PUB %s %d\r\n", n.subj, len(body))
	n.buf = append(append(n.buf, body...), "\r\n"...)
	_, err := n.conn.Write(n.buf)
	return err
}

// pong answers the PINGs the server sent since the last look, without
// waiting for any.
func (n *simNode) pong() {
	_ = n.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	b := make([]byte, 512)
	k, _ := n.conn.Read(b)
	_ = n.conn.SetReadDeadline(time.Time{})
	if bytes.Contains(b[:k], []byte("PING")) {
		_, _ = n.conn.Write([]byte("PONG\r\n"))
	}
}
