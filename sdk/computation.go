package sdk

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/runproto"
)

// CreateComputation creates a computation in a workspace; the caller
// becomes its owner and runner.
func (c *Client) CreateComputation(ctx context.Context, workspaceID string, spec computation.Spec) (*computation.Computation, error) {
	return one[computation.Computation](ctx, c, http.MethodPost, path("workspaces", workspaceID, "computations"), spec)
}

// ListComputations returns a page of the computations the caller may see
// (of one workspace when workspaceID is set) and the next cursor.
func (c *Client) ListComputations(ctx context.Context, workspaceID string, opts ListOptions) ([]*computation.Computation, string, error) {
	q := opts.query()
	if workspaceID != "" {
		q.Set("workspace", workspaceID)
	}
	return page[*computation.Computation](ctx, c, path("computations"), q)
}

// GetComputation returns a computation with its manifest and approvals.
func (c *Client) GetComputation(ctx context.Context, id string) (*computation.Computation, error) {
	return one[computation.Computation](ctx, c, http.MethodGet, path("computations", id), nil)
}

// UpdateComputation replaces a computation's definition; Conflict once it
// has run.
func (c *Client) UpdateComputation(ctx context.Context, id string, spec computation.Spec) (*computation.Computation, error) {
	return one[computation.Computation](ctx, c, http.MethodPut, path("computations", id), spec)
}

// DeleteComputation deletes a computation with its runs; Conflict while a
// run is active.
func (c *Client) DeleteComputation(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, path("computations", id), nil, nil, nil)
}

// ComputationManifest returns a computation's manifest exactly as the
// server hashed it, and its SHA-256. It recomputes the digest and fails
// with Internal when the bytes do not match the one the server states.
func (c *Client) ComputationManifest(ctx context.Context, id string) ([]byte, string, error) {
	resp, err := c.stream(ctx, http.MethodGet, path("computations", id, "manifest"), nil, nil, c.http)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, "", &cove.Error{Code: cove.Unavailable, Message: "reading the manifest failed", Err: err}
	}
	sum := sha256.Sum256(b)
	got := hex.EncodeToString(sum[:])
	if want := resp.Header.Get(httpapi.HeaderSHA256); got != want {
		return nil, "", cove.Errorf(cove.Internal, "the manifest's SHA-256 is %s, not the %s the server states", got, want)
	}
	return b, got, nil
}

// DryRun returns every blocker that keeps the caller from running a
// computation now.
func (c *Client) DryRun(ctx context.Context, id string) (*computation.DryRun, error) {
	return one[computation.DryRun](ctx, c, http.MethodPost, path("computations", id, "dryrun"), nil)
}

// Approve approves the datasets the caller provides to a computation, or
// the one d names, for its current manifest.
func (c *Client) Approve(ctx context.Context, id string, d computation.Decision) (*computation.Computation, error) {
	return one[computation.Computation](ctx, c, http.MethodPost, path("computations", id, "approve"), d)
}

// Reject rejects the datasets the caller provides to a computation, or the
// one d names.
func (c *Client) Reject(ctx context.Context, id string, d computation.Decision) (*computation.Computation, error) {
	return one[computation.Computation](ctx, c, http.MethodPost, path("computations", id, "reject"), d)
}

// StartRun starts a run of a computation. A computation that cannot run is
// refused with every blocker in the error's details.
func (c *Client) StartRun(ctx context.Context, computationID string) (*computation.Run, error) {
	return one[computation.Run](ctx, c, http.MethodPost, path("computations", computationID, "runs"), nil)
}

// ListRuns returns a page of a computation's runs, oldest first, and the
// next cursor.
func (c *Client) ListRuns(ctx context.Context, computationID string, opts ListOptions) ([]*computation.Run, string, error) {
	return page[*computation.Run](ctx, c, path("computations", computationID, "runs"), opts.query())
}

// GetRun returns a run.
func (c *Client) GetRun(ctx context.Context, id string) (*computation.Run, error) {
	return one[computation.Run](ctx, c, http.MethodGet, path("runs", id), nil)
}

// StopRun stops a run.
func (c *Client) StopRun(ctx context.Context, id string) (*computation.Run, error) {
	return one[computation.Run](ctx, c, http.MethodPost, path("runs", id, "stop"), nil)
}

// RestartRun starts a new run of the computation of a run that has ended.
func (c *Client) RestartRun(ctx context.Context, id string) (*computation.Run, error) {
	return one[computation.Run](ctx, c, http.MethodPost, path("runs", id, "restart"), nil)
}

// RunEvents returns a run's history.
func (c *Client) RunEvents(ctx context.Context, id string) ([]*computation.RunEvent, error) {
	items, _, err := page[*computation.RunEvent](ctx, c, path("runs", id, "events"), nil)
	return items, err
}

// LogOptions choose which log lines Logs reads.
type LogOptions struct {
	// After skips the lines up to this seq.
	After int64
	// Follow waits for new lines until the run ends.
	Follow bool
}

// logRetries is how many times in a row Logs reconnects a stream that
// broke before the run ended.
const logRetries = 5

// Logs calls fn with a run's log lines, read from the server-sent event
// stream of GET /runs/{id}/logs. With Follow it waits for new lines until
// the run ends and returns the run as it ended; a stream that breaks
// before is resumed where it stopped (Last-Event-ID), a few times. Without
// Follow it returns the run as nil once the existing lines are read. An
// error from fn ends it with that error.
func (c *Client) Logs(ctx context.Context, runID string, opts LogOptions, fn func(runproto.LogLine) error) (*computation.Run, error) {
	after, failures := opts.After, 0
	for {
		end, err := c.readLogs(ctx, runID, after, opts.Follow, func(l runproto.LogLine) error {
			after, failures = l.Seq, 0
			return fn(l)
		})
		var broken *streamBroken
		switch {
		case err == nil && (end != nil || !opts.Follow):
			return end, nil
		case err == nil:
			// The server ended the stream before the run; ask again.
		case errors.As(err, &broken) && ctx.Err() == nil:
		case opts.Follow && cove.ErrorCode(err) == cove.Unavailable && ctx.Err() == nil:
			// The server is restarting or briefly unreachable: a follower
			// waits for it and resumes after the last line it saw.
		default:
			return nil, err
		}
		if failures++; failures > logRetries {
			return nil, cove.Errorf(cove.Unavailable, "the log stream of run %s keeps breaking; try again later", runID)
		}
		select {
		case <-ctx.Done():
			return nil, &cove.Error{Code: cove.Unavailable, Message: "following the log was canceled", Err: ctx.Err()}
		case <-time.After(time.Duration(failures) * 500 * time.Millisecond):
		}
	}
}

// streamBroken is a log stream cut off in the middle.
type streamBroken struct{ err error }

func (e *streamBroken) Error() string { return "the log stream broke: " + e.err.Error() }
func (e *streamBroken) Unwrap() error { return e.err }

// readLogs reads one log stream and returns the run its end event
// carries, if any.
func (c *Client) readLogs(ctx context.Context, runID string, after int64, follow bool, fn func(runproto.LogLine) error) (*computation.Run, error) {
	q := url.Values{}
	if follow {
		q.Set("follow", "true")
	}
	h := http.Header{"Accept": {"text/event-stream"}}
	if after > 0 {
		h.Set("Last-Event-ID", strconv.FormatInt(after, 10))
	}
	resp, err := c.stream(ctx, http.MethodGet, path("runs", runID, "logs"), q, h, c.longClient())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var end *computation.Run
	err = readEvents(resp.Body, func(event string, data []byte) error {
		switch event {
		case "", "message":
			var l runproto.LogLine
			if err := json.Unmarshal(data, &l); err != nil {
				return cove.Errorf(cove.Internal, "the server sent a log line that is not JSON")
			}
			return fn(l)
		case "end":
			end = new(computation.Run)
			if err := json.Unmarshal(data, end); err != nil {
				return cove.Errorf(cove.Internal, "the server sent an end event that is not a run")
			}
		case "error":
			var b httpapi.ErrorBody
			if err := json.Unmarshal(data, &b); err != nil || !knownCode(b.Code) {
				return cove.Errorf(cove.Internal, "the log stream failed")
			}
			return &cove.Error{Code: b.Code, Message: b.Message, Details: b.Details}
		}
		return nil
	})
	return end, err
}

// readEvents parses a server-sent event stream and calls fn per event.
// Read failures are a *streamBroken.
func readEvents(r io.Reader, fn func(event string, data []byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var (
		event string
		data  bytes.Buffer
	)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if data.Len() > 0 {
				if err := fn(event, bytes.TrimSuffix(data.Bytes(), []byte("\n"))); err != nil {
					return err
				}
			}
			event = ""
			data.Reset()
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "event":
			event = value
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return &streamBroken{err: err}
	}
	return nil
}

// Result is a run's sealed result as it downloads.
type Result struct {
	// Body reads the sealed bytes. It fails at the end, instead of
	// returning io.EOF, when they are fewer than Size or do not hash to
	// SHA256. Close it.
	Body   io.ReadCloser
	Size   int64
	SHA256 string
}

// OpenResult starts downloading a run's result, sealed with age to its
// result consumers. Only result consumers may (Forbidden for other
// participants); a run without a result is Conflict.
func (c *Client) OpenResult(ctx context.Context, runID string) (*Result, error) {
	resp, err := c.stream(ctx, http.MethodGet, path("runs", runID, "result"), nil, nil, c.longClient())
	if err != nil {
		return nil, err
	}
	sum := resp.Header.Get(httpapi.HeaderSHA256)
	if !blob.ValidSHA256(sum) || resp.ContentLength < 0 {
		resp.Body.Close()
		return nil, cove.Errorf(cove.Internal, "the server sent a result without its size and SHA-256")
	}
	body := struct {
		io.Reader
		io.Closer
	}{blob.Verify(resp.Body, sum), resp.Body}
	return &Result{Body: body, Size: resp.ContentLength, SHA256: sum}, nil
}

// longClient is the client's HTTP client without its overall timeout, for
// downloads and streams that may rightly last longer; ctx bounds them.
func (c *Client) longClient() *http.Client {
	hc := *c.http
	hc.Timeout = 0
	return &hc
}

// stream sends a request whose answer the caller reads as it comes, with
// the same authentication and one refresh as every other call. An error
// status is returned as the server's error.
func (c *Client) stream(ctx context.Context, method, route string, q url.Values, h http.Header, hc *http.Client) (*http.Response, error) {
	send := func(token string) (*http.Response, error) {
		u := c.base + route
		if len(q) > 0 {
			u += "?" + q.Encode()
		}
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			return nil, cove.Wrap(err, "could not build the request")
		}
		for k, v := range h {
			req.Header[k] = v
		}
		req.Header.Set("User-Agent", userAgent)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, &cove.Error{Code: cove.Unavailable, Message: "the request to the server was canceled or timed out", Err: err}
			}
			return nil, &cove.Error{Code: cove.Unavailable, Message: fmt.Sprintf("the server at %s could not be reached; check --server", c.base), Err: err}
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			defer resp.Body.Close()
			return nil, c.decodeError(resp)
		}
		return resp, nil
	}
	token := c.token()
	resp, err := send(token)
	if !isUnauthorized(err) || !c.canRefresh() {
		return resp, err
	}
	if token, err = c.refreshAfter(ctx, token); err != nil {
		return nil, err
	}
	return send(token)
}
