package computenode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/runproto"
)

// identityFile is the name of the enrollment in the data directory.
const identityFile = "node.json"

// EnrollPath is where the control plane takes enrollments.
const EnrollPath = "/api/v1/nodes/enroll"

// enrollTimeout bounds the enrollment request.
const enrollTimeout = 30 * time.Second

// identity is what node.json holds: who the node is and how it reaches
// NATS. The credential is a secret; the file is 0600.
type identity struct {
	NodeID     string    `json:"node_id"`
	Name       string    `json:"name"`
	ServerURL  string    `json:"server_url"`
	NATSURL    string    `json:"nats_url"`
	Creds      string    `json:"creds"`
	Expires    time.Time `json:"expires"`
	EnrolledAt time.Time `json:"enrolled_at"`
}

// enrollment returns the node's identity from node.json, or enrolls the
// node and writes node.json. A node whose credential has expired enrolls
// again when it is given a token.
func (n *Node) enrollment(ctx context.Context) (identity, error) {
	path := filepath.Join(n.cfg.DataDir, identityFile)
	id, err := loadIdentity(path)
	switch {
	case err == nil && !id.Expires.IsZero() && time.Now().After(id.Expires):
		if n.cfg.Token == "" {
			return id, cove.Errorf(cove.Unauthenticated,
				"the node's credential expired at %s: enroll it again with a new --token", id.Expires.UTC().Format(time.RFC3339))
		}
		n.log.Warn("the node's credential expired; enrolling again", "expired", id.Expires)
	case err == nil:
		n.log.Info("using the enrollment in the data directory", "node", id.NodeID, "file", path)
		return id, nil
	case !errors.Is(err, fs.ErrNotExist):
		return id, err
	}

	if n.cfg.ServerURL == "" || n.cfg.Token == "" {
		return identity{}, cove.Errorf(cove.Invalid,
			"the node is not enrolled yet (no %s in %s): give the server URL and an enrollment token", identityFile, n.cfg.DataDir)
	}
	reply, err := enroll(ctx, n.cfg.ServerURL, runproto.EnrollRequest{
		Token:    n.cfg.Token,
		Name:     n.cfg.Name,
		Capacity: n.cfg.Capacity,
		Drivers:  n.available(),
		Labels:   n.cfg.Labels,
		TEE:      "none",
	}, n.log)
	if err != nil {
		return identity{}, err
	}
	id = identity{
		NodeID:     reply.NodeID,
		Name:       n.cfg.Name,
		ServerURL:  n.cfg.ServerURL,
		NATSURL:    reply.NATSURL,
		Creds:      reply.Creds,
		Expires:    reply.Expires,
		EnrolledAt: time.Now().UTC(),
	}
	if err := saveIdentity(path, id); err != nil {
		return identity{}, err
	}
	n.log.Info("enrolled", "node", id.NodeID, "expires", id.Expires)
	return id, nil
}

// enroll sends an enrollment request to the control plane.
func enroll(ctx context.Context, server string, req runproto.EnrollRequest, log *slog.Logger) (*runproto.EnrollReply, error) {
	u, err := url.Parse(strings.TrimRight(server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, cove.Errorf(cove.Invalid, "the server URL %q is not an http(s) URL", server)
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		log.Warn("enrolling over plain HTTP: the token and the node's credential cross the network in clear", "server", server)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, cove.Wrap(err, "cannot encode the enrollment")
	}
	ctx, cancel := context.WithTimeout(ctx, enrollTimeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String()+EnrollPath, bytes.NewReader(body))
	if err != nil {
		return nil, cove.Wrap(err, "cannot build the enrollment request")
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return nil, &cove.Error{Code: cove.Unavailable, Message: "cannot reach the control plane at " + server, Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, &cove.Error{Code: cove.Unavailable, Message: "the enrollment reply was cut off", Err: err}
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Code    cove.Code `json:"code"`
			Message string    `json:"message"`
		}
		if json.Unmarshal(data, &e) != nil || e.Code == "" {
			return nil, cove.Errorf(cove.Unavailable, "the control plane answered the enrollment with HTTP %d", resp.StatusCode)
		}
		return nil, cove.Errorf(e.Code, "enrollment refused: %s", e.Message)
	}
	var reply runproto.EnrollReply
	if err := json.Unmarshal(data, &reply); err != nil {
		return nil, &cove.Error{Code: cove.Internal, Message: "the enrollment reply cannot be read", Err: err}
	}
	if !validRunID(reply.NodeID) || reply.NATSURL == "" || reply.Creds == "" {
		return nil, cove.Errorf(cove.Internal, "the enrollment reply lacks the node ID, NATS URL or credential")
	}
	return &reply, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loadIdentity reads node.json. It refuses a file others may read: it
// holds the node's secret.
func loadIdentity(path string) (identity, error) {
	var id identity
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return id, err
		}
		return id, cove.Wrap(err, "cannot read "+path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return id, cove.Errorf(cove.Invalid, "%s holds the node's secret and is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return id, cove.Wrap(err, "cannot read "+path)
	}
	if err := json.Unmarshal(data, &id); err != nil || !validRunID(id.NodeID) || id.NATSURL == "" || id.Creds == "" {
		return identity{}, cove.Errorf(cove.Invalid, "%s is damaged: remove it and enroll the node again", path)
	}
	return id, nil
}

// saveIdentity writes node.json atomically, mode 0600.
func saveIdentity(path string, id identity) error {
	data, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return cove.Wrap(err, "cannot encode the enrollment")
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".node-*.json") // 0600
	if err != nil {
		return cove.Wrap(err, "cannot write "+path)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return cove.Wrap(err, "cannot write "+path)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return cove.Wrap(err, "cannot write "+path)
	}
	if err := tmp.Close(); err != nil {
		return cove.Wrap(err, "cannot write "+path)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return cove.Wrap(err, "cannot write "+path)
	}
	return nil
}
