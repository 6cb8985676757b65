package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/runproto"
)

// HeaderSHA256 carries the SHA-256 of a raw download: a manifest or a
// sealed result.
const HeaderSHA256 = "Cove-Sha256"

// logFlushDelay is how long a log stream holds written lines before it
// flushes them: lines read together go out in one write, and none waits
// for long.
const logFlushDelay = 20 * time.Millisecond

// MountComputations adds the computation and run routes. logs and results
// may be nil until the components that serve them exist; their routes then
// answer Unavailable.
func (s *Server) MountComputations(svc *computation.Service, logs computation.LogReader, results computation.ResultBlobs) {
	const tag, runTag = "computations", "runs"
	// rawOut documents a Raw handler's content type.
	rawOut := func(contentType string) opt { return func(r *route) { r.rawOut = contentType } }
	handle(s, tag, "POST /api/v1/workspaces/{id}/computations", "Create a computation in a workspace; the caller becomes its owner and runner",
		func(c *Call, in computation.Spec) (*computation.Computation, error) {
			return svc.Create(c.Ctx(), c.P, c.Path("id"), in)
		}, status(201))
	handle(s, tag, "GET /api/v1/computations", "The computations of the caller's workspaces and those the caller participates in",
		func(c *Call, _ Empty) (List[*computation.Computation], error) {
			page, err := c.Page()
			if err != nil {
				return List[*computation.Computation]{}, err
			}
			out, err := svc.List(c.Ctx(), c.P, c.Query("workspace"), page)
			return list(out, page.Limit, func(x *computation.Computation) string { return x.ID }), err
		}, paged(), query("workspace", "only the computations of this workspace"))
	handle(s, tag, "GET /api/v1/computations/{id}", "One computation with its manifest, the manifest's SHA-256 and the approvals",
		func(c *Call, _ Empty) (*computation.Computation, error) { return svc.Get(c.Ctx(), c.P, c.Path("id")) })
	handle(s, tag, "PUT /api/v1/computations/{id}", "Replace a computation's definition (owner or workspace admins; conflict once it has run); a new manifest clears the approvals",
		func(c *Call, in computation.Spec) (*computation.Computation, error) {
			return svc.Update(c.Ctx(), c.P, c.Path("id"), in)
		})
	handle(s, tag, "DELETE /api/v1/computations/{id}", "Delete a computation with its runs (owner or workspace admins; conflict while a run is active)",
		func(c *Call, _ Empty) (Empty, error) { return Empty{}, svc.Delete(c.Ctx(), c.P, c.Path("id")) })
	handle(s, tag, "GET /api/v1/computations/{id}/manifest", "The manifest exactly as hashed (RFC 8785 canonical JSON); its SHA-256 is in the Cove-Sha256 header",
		func(c *Call, _ Empty) (Raw, error) {
			comp, err := svc.Get(c.Ctx(), c.P, c.Path("id"))
			if err != nil {
				return Raw{}, err
			}
			h := c.W.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Content-Length", strconv.Itoa(len(comp.Canonical)))
			h.Set(HeaderSHA256, comp.ManifestSHA256)
			_, _ = c.W.Write(comp.Canonical)
			return Raw{}, nil
		}, rawOut("application/json"))
	handle(s, tag, "POST /api/v1/computations/{id}/dryrun", "Every blocker that keeps the caller from running the computation now, all at once",
		func(c *Call, _ Empty) (*computation.DryRun, error) { return svc.DryRun(c.Ctx(), c.P, c.Path("id")) })
	handle(s, tag, "POST /api/v1/computations/{id}/approve", "Approve the datasets the caller provides (admins of their workspaces), or the one named, for the current manifest",
		func(c *Call, in computation.Decision) (*computation.Computation, error) {
			return svc.Approve(c.Ctx(), c.P, c.Path("id"), in)
		})
	handle(s, tag, "POST /api/v1/computations/{id}/reject", "Reject the datasets the caller provides, or the one named; runs stay blocked until approved",
		func(c *Call, in computation.Decision) (*computation.Computation, error) {
			return svc.Reject(c.Ctx(), c.P, c.Path("id"), in)
		})
	handle(s, tag, "POST /api/v1/computations/{id}/runs", "Start a run; refused with every blocker as details when it cannot run",
		func(c *Call, _ Empty) (*computation.Run, error) { return svc.StartRun(c.Ctx(), c.P, c.Path("id")) }, status(201))
	handle(s, tag, "GET /api/v1/computations/{id}/runs", "A computation's runs, oldest first",
		func(c *Call, _ Empty) (List[*computation.Run], error) {
			page, err := c.Page()
			if err != nil {
				return List[*computation.Run]{}, err
			}
			out, err := svc.ListRuns(c.Ctx(), c.P, c.Path("id"), page)
			return list(out, page.Limit, func(r *computation.Run) string { return r.ID }), err
		}, paged())

	handle(s, runTag, "GET /api/v1/runs/{id}", "One run",
		func(c *Call, _ Empty) (*computation.Run, error) { return svc.GetRun(c.Ctx(), c.P, c.Path("id")) })
	handle(s, runTag, "POST /api/v1/runs/{id}/stop", "Stop a run (whoever may start runs of its computation)",
		func(c *Call, _ Empty) (*computation.Run, error) { return svc.Stop(c.Ctx(), c.P, c.Path("id")) })
	handle(s, runTag, "POST /api/v1/runs/{id}/restart", "Start a new run of the computation of a run that has ended",
		func(c *Call, _ Empty) (*computation.Run, error) { return svc.Restart(c.Ctx(), c.P, c.Path("id")) }, status(201))
	handle(s, runTag, "GET /api/v1/runs/{id}/events", "A run's history: every state change in order",
		func(c *Call, _ Empty) (List[*computation.RunEvent], error) {
			out, err := svc.RunEvents(c.Ctx(), c.P, c.Path("id"))
			if out == nil {
				out = []*computation.RunEvent{}
			}
			return List[*computation.RunEvent]{Items: out}, err
		})
	handle(s, runTag, "GET /api/v1/runs/{id}/logs", "A run's log as server-sent events: one `data:` LogLine per event with `id:` its seq; with follow=true, an `end` event carrying the run once it has ended",
		func(c *Call, _ Empty) (Raw, error) { return Raw{}, serveLogs(c, s.streams, svc, logs) },
		rawOut("text/event-stream"),
		query("follow", "true to wait for new lines until the run ends"),
		query("after", "only lines with a greater seq; the Last-Event-ID header takes precedence"))
	handle(s, runTag, "GET /api/v1/runs/{id}/result", "Download a run's result, sealed with age to its result consumers (result consumers only); its SHA-256 is in the Cove-Sha256 header",
		func(c *Call, _ Empty) (Raw, error) {
			rc, size, run, err := svc.Result(c.Ctx(), c.P, c.Path("id"), results)
			if err != nil {
				return Raw{}, err
			}
			defer rc.Close()
			h := c.W.Header()
			h.Set("Content-Type", "application/octet-stream")
			h.Set("Content-Length", strconv.FormatInt(size, 10))
			h.Set("Content-Disposition", `attachment; filename="`+run.ID+`.age"`)
			h.Set(HeaderSHA256, run.ResultSHA256)
			// A failure halfway cuts the body short of Content-Length,
			// which the client sees; nothing else can be said any more.
			_, _ = io.Copy(c.W, rc)
			return Raw{}, nil
		}, rawOut("application/octet-stream"))
}

// serveLogs streams a run's log lines as server-sent events. Errors before
// the stream starts are answered as usual; later ones end it with an
// `error` event carrying an ErrorBody. When the server shuts down (streams
// ends) the stream stops quietly, and the client resumes elsewhere with
// Last-Event-ID.
func serveLogs(c *Call, streams context.Context, svc *computation.Service, logs computation.LogReader) error {
	after, err := logsAfter(c)
	if err != nil {
		return err
	}
	follow := c.Query("follow") == "true" || c.Query("follow") == "1"
	if logs == nil {
		return cove.Errorf(cove.Unavailable, "run logs are not available yet; try again later")
	}
	// Check access before the 200 goes out, so a refusal is an ordinary
	// error answer.
	if _, err := svc.GetRun(c.Ctx(), c.P, c.Path("id")); err != nil {
		return err
	}
	h := c.W.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx would hold the stream back
	c.W.WriteHeader(http.StatusOK)
	st := &eventStream{w: c.W, rc: http.NewResponseController(c.W)}
	st.flush()
	defer st.close()
	ctx, cancel := context.WithCancel(c.Ctx())
	defer cancel()
	defer context.AfterFunc(streams, cancel)()
	run, err := svc.Logs(ctx, c.P, c.Path("id"), logs, after, follow, func(l runproto.LogLine) error {
		return st.sendJSON("", strconv.FormatInt(l.Seq, 10), appendLogLine(nil, l))
	})
	switch {
	case ctx.Err() != nil:
		// The client left, or the server is shutting down.
	case err != nil:
		_ = st.send("error", "", ErrorBody{Code: cove.ErrorCode(err), Message: cove.ErrorMessage(err), Details: cove.ErrorDetails(err)})
	case follow && run.State.Terminal():
		_ = st.send("end", "", run)
	}
	return nil
}

// logsAfter reads where a log stream resumes: the Last-Event-ID header a
// reconnecting client sends, else ?after=.
func logsAfter(c *Call) (int64, error) {
	v := c.R.Header.Get("Last-Event-ID")
	if v == "" {
		v = c.Query("after")
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, cove.Errorf(cove.Invalid, "after and Last-Event-ID must be a log line's seq, a number from 0").WithDetails(cove.Detail{Field: "after", Message: "not a seq"})
	}
	return n, nil
}

// eventStream writes server-sent events. Lines come one by one from the
// log reader, which may deliver a batch at a time; the stream holds them
// for logFlushDelay before it flushes, so a batch goes out in one write.
type eventStream struct {
	w  http.ResponseWriter
	rc *http.ResponseController

	mu      sync.Mutex // guards writes and flushes against the timer
	timer   *time.Timer
	pending bool
	closed  bool
}

// send writes one event. Named events (end, error) are flushed at once.
func (s *eventStream) send(event, id string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return cove.Wrap(err, "could not encode an event")
	}
	return s.sendJSON(event, id, b)
}

// appendLogLine appends l as json.Marshal encodes it, byte for byte (a time
// json.Marshal cannot encode becomes null instead of an error), without
// reflecting on the struct or validating time.Time's own JSON: a log
// stream sends a line per event, and that was most of its cost.
func appendLogLine(b []byte, l runproto.LogLine) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, l.Seq, 10)
	b = append(b, `,"time":`...)
	if t, err := l.Time.MarshalJSON(); err == nil {
		b = append(b, t...)
	} else {
		b = append(b, `null`...) // a year outside 0–9999; agents send the time of day
	}
	b = append(b, `,"stream":`...)
	b = appendJSONString(b, l.Stream)
	b = append(b, `,"text":`...)
	b = appendJSONString(b, l.Text)
	return append(b, '}')
}

// appendJSONString appends s as json.Marshal quotes it.
func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always encodes
	return append(b, q...)
}

// sendJSON writes one event whose data is the JSON in b.
func (s *eventStream) sendJSON(event, id string, b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return cove.Errorf(cove.Unavailable, "the stream is closed")
	}
	if event != "" {
		fmt.Fprintf(s.w, "event: %s\n", event)
	}
	if id != "" {
		fmt.Fprintf(s.w, "id: %s\n", id)
	}
	if _, err := fmt.Fprintf(s.w, "data: %s\n\n", b); err != nil {
		return &cove.Error{Code: cove.Unavailable, Message: "the client went away", Err: err}
	}
	switch {
	case event != "":
		s.flushLocked()
	case !s.pending:
		s.pending = true
		if s.timer == nil {
			s.timer = time.AfterFunc(logFlushDelay, s.flush)
		} else {
			s.timer.Reset(logFlushDelay)
		}
	}
	return nil
}

func (s *eventStream) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.flushLocked()
	}
}

func (s *eventStream) flushLocked() {
	s.pending = false
	_ = s.rc.Flush()
}

// close flushes what is left; nothing is written after it, so the handler
// may return.
func (s *eventStream) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
	}
	if s.pending {
		s.flushLocked()
	}
	s.closed = true
}
