package httpapi

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/covecompute/cove"
)

// Empty is the input of routes without a body and the output of routes
// that answer 204.
type Empty struct{}

// List is the shape of every list response.
type List[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty" jsonschema:"description=pass as ?cursor= to get the next page; absent on the last page"`
}

// Raw is the output type of handlers that write their response themselves
// through Call.W: downloads and server-sent events.
type Raw struct{}

// Call is what a handler gets besides its decoded body: the request (for
// path and query values, and the body of raw uploads), the response writer
// (for Raw handlers only) and the authenticated principal.
type Call struct {
	R *http.Request
	W http.ResponseWriter
	P cove.Principal
	// Node is the node that authenticated with its client certificate, on
	// routes for nodes (mTLS); Cert is that certificate.
	Node string
	Cert *x509.Certificate
}

// Ctx returns the request's context.
func (c *Call) Ctx() context.Context { return c.R.Context() }

// Path returns a path value.
func (c *Call) Path(name string) string { return c.R.PathValue(name) }

// Query returns a query value.
func (c *Call) Query(name string) string { return c.R.URL.Query().Get(name) }

// Page reads ?limit= and ?cursor=.
func (c *Call) Page() (cove.Page, error) {
	var p cove.Page
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > cove.MaxPageLimit {
			return p, cove.Errorf(cove.Invalid, "limit must be a number from 1 to %d", cove.MaxPageLimit).WithDetails(cove.Detail{Field: "limit", Message: "out of range"})
		}
		p.Limit = n
	}
	after, err := cove.DecodeCursor(c.Query("cursor"))
	p.After = after
	return p.Normalize(), err
}

// Client returns the caller's address for rate limiting. The peer address
// is used, not X-Forwarded-For, which any client can forge.
func (c *Call) Client() string {
	host, _, err := net.SplitHostPort(c.R.RemoteAddr)
	if err != nil {
		return c.R.RemoteAddr
	}
	return host
}

// route is one operation: its pattern, documentation and handler. The
// OpenAPI document is generated from the routes, so it cannot drift from
// what is served.
type route struct {
	method, path string
	summary      string
	tag          string
	public       bool // no authentication
	peer         bool // a node authenticates with its client certificate
	status       int
	in, out      reflect.Type // nil for no body
	query        []param
	list         bool
	rawIn        string // content type of a streamed request body, such as application/octet-stream
	rawOut       string // content type a Raw handler writes
	handler      http.HandlerFunc
}

type param struct{ name, doc string }

// opt adjusts a route.
type opt func(*route)

func public() opt         { return func(r *route) { r.public = true } }
func peer() opt           { return func(r *route) { r.peer = true } }
func status(code int) opt { return func(r *route) { r.status = code } }
func query(name, doc string) opt {
	return func(r *route) { r.query = append(r.query, param{name, doc}) }
}
func paged() opt { return func(r *route) { r.list = true } }

// handle registers fn at pattern ("METHOD /path"). In and Out are the
// request and response bodies; Empty means none.
func handle[In, Out any](s *Server, tag, pattern, summary string, fn func(*Call, In) (Out, error), opts ...opt) {
	method, path, _ := strings.Cut(pattern, " ")
	rt := &route{method: method, path: path, summary: summary, tag: tag, status: http.StatusOK}
	if t := reflect.TypeFor[In](); t != reflect.TypeFor[Empty]() {
		rt.in = t
	}
	switch t := reflect.TypeFor[Out](); t {
	case reflect.TypeFor[Empty]():
		rt.status = http.StatusNoContent
	case reflect.TypeFor[Raw]():
	default:
		rt.out = t
	}
	for _, o := range opts {
		o(rt)
	}
	requests := s.metrics.requests.MustCurryWith(prometheus.Labels{"route": pattern})
	latency := s.metrics.latency.WithLabelValues(pattern)
	rt.handler = func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		code := s.serve(w, r, rt, func(c *Call) (any, error) {
			var in In
			if rt.in != nil {
				if err := decode(w, r, s.maxBody, &in); err != nil {
					return nil, err
				}
			}
			return fn(c, in)
		})
		requests.WithLabelValues(strconv.Itoa(code)).Inc()
		latency.Observe(time.Since(start).Seconds())
	}
	s.routes = append(s.routes, rt)
	s.mux.HandleFunc(pattern, rt.handler)
}

// serve authenticates, runs the handler and writes its result or error.
// It returns the status written.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, rt *route, run func(*Call) (any, error)) int {
	c := &Call{R: r, W: w}
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		err := cove.Errorf(cove.Invalid, "the query string is malformed; percent-encode its values")
		writeError(w, r, s.log, err)
		return StatusOf(cove.Invalid)
	}
	switch {
	case rt.peer:
		id, cert, err := s.verifyNode(r)
		if err != nil {
			writeError(w, r, s.log, err)
			return StatusOf(cove.ErrorCode(err))
		}
		c.Node, c.Cert = id, cert
	case !rt.public:
		bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		p, err := s.identity.Authenticate(r.Context(), strings.TrimSpace(bearer))
		if err != nil {
			writeError(w, r, s.log, err)
			return StatusOf(cove.ErrorCode(err))
		}
		c.P = p
	}
	out, err := run(c)
	if err != nil {
		// A Raw handler that has begun its response cannot switch to an
		// error body; it reports failures in its own format.
		writeError(w, r, s.log, err)
		return StatusOf(cove.ErrorCode(err))
	}
	if _, raw := out.(Raw); raw {
		return rt.status
	}
	if rt.out == nil {
		w.WriteHeader(rt.status)
		return rt.status
	}
	writeJSON(w, rt.status, out)
	return rt.status
}

// decode reads a JSON body of at most max bytes into v, rejecting unknown
// fields and trailing data.
func decode(w http.ResponseWriter, r *http.Request, max int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return cove.Errorf(cove.Invalid, "send the body as application/json, not %s", ct)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return cove.Errorf(cove.TooLarge, "the request body is larger than %d bytes", max)
	} else if err != nil {
		return cove.Errorf(cove.Invalid, "could not read the request body")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return cove.Errorf(cove.Invalid, "the request needs a JSON body")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return cove.Errorf(cove.Invalid, "the request body is not valid JSON for this call: %s", jsonProblem(err))
	}
	if dec.More() {
		return cove.Errorf(cove.Invalid, "the request body has data after the JSON value")
	}
	return nil
}

// jsonProblem describes a decoding error without echoing the input.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return "syntax error at byte " + strconv.FormatInt(syn.Offset, 10)
	case errors.As(err, &typ):
		return "field " + strconv.Quote(typ.Field) + " must be " + typ.Type.String()
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON ends early"
	default:
		return "malformed JSON"
	}
}

// list wraps a page of items with its next cursor.
func list[T any](items []T, limit int, id func(T) string) List[T] {
	if items == nil {
		items = []T{}
	}
	return List[T]{Items: items, NextCursor: cove.NextCursor(items, limit, id)}
}
