// Package sdk is the Go client of Cove's REST API. The CLI talks to the
// server only through it.
//
// Methods are named like the domain services they reach and take and
// return the domain types (identity.User, workspace.Workspace, ...). Every
// error is a *cove.Error: the server's code, user-safe message and details
// survive the wire, so callers branch on cove.ErrorCode(err) exactly as
// they would in-process. A server that cannot be reached is Unavailable.
package sdk

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/identity"
)

// userAgent names the client in the server's logs.
const userAgent = "cove-go-sdk"

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 1 << 20

// Client calls one Cove server. It is safe for concurrent use.
type Client struct {
	base string // without a trailing slash
	http *http.Client

	mu        sync.Mutex // guards access and refresh
	access    string
	refresh   string
	onRefresh func(*identity.Tokens)

	// refreshing serializes refreshes: a refresh token works once, and a
	// second use of it ends the session, so concurrent calls that all got
	// 401 must not each refresh.
	refreshing sync.Mutex
}

// Option configures a Client.
type Option func(*Client)

// WithToken authenticates calls with an access token or a personal access
// token.
func WithToken(token string) Option {
	return func(c *Client) { c.access = token }
}

// WithHTTPClient replaces the default HTTP client, which times requests out
// after a minute.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.http = hc }
}

// WithTLS sets how the client trusts the server's certificate (see
// package tlstrust). Nil keeps the system's roots.
func WithTLS(cfg *tls.Config) Option {
	return func(c *Client) {
		if cfg == nil {
			return
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = cfg
		c.http = &http.Client{Timeout: c.http.Timeout, Transport: tr}
	}
}

// WithRefresh lets the client renew an expired access token: when a call is
// answered 401, it exchanges refreshToken for new tokens once, calls
// onRefresh with them (so the caller can persist them; onRefresh must not
// call the Client) and retries the call once. onRefresh may be nil.
func WithRefresh(refreshToken string, onRefresh func(*identity.Tokens)) Option {
	return func(c *Client) { c.refresh, c.onRefresh = refreshToken, onRefresh }
}

// New returns a client of the server at baseURL, such as
// "https://cove.example.com". It returns Invalid when baseURL is not an
// http or https URL.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, cove.Errorf(cove.Invalid, "the server URL %q is not like http://host:port or https://host", baseURL)
	}
	c := &Client{
		base: strings.TrimRight(u.String(), "/"),
		http: &http.Client{Timeout: time.Minute},
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// BaseURL returns the server's URL without a trailing slash.
func (c *Client) BaseURL() string { return c.base }

// ListOptions asks for one page of a list. Limit 0 means the server's
// default; Cursor is the NextCursor of the previous page, empty for the
// first.
type ListOptions struct {
	Limit  int
	Cursor string
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	return q
}

// All returns every item of a list, fetching page after page by following
// the cursors. fetch gets the cursor in its ListOptions and may set Limit
// to choose the page size. A failed fetch is yielded once, with the zero
// T, and ends the sequence.
//
//	for ws, err := range sdk.All(ctx, c.ListWorkspaces) { ... }
func All[T any](ctx context.Context, fetch func(context.Context, ListOptions) ([]T, string, error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		var opts ListOptions
		for {
			items, next, err := fetch(ctx, opts)
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, it := range items {
				if !yield(it, nil) {
					return
				}
			}
			if next == "" {
				return
			}
			if next == opts.Cursor {
				var zero T
				yield(zero, cove.Errorf(cove.Internal, "the server returned the same page cursor twice"))
				return
			}
			opts.Cursor = next
		}
	}
}

// request is one API call.
type request struct {
	method string
	path   string // from the root, such as /api/v1/me
	query  url.Values
	in     any  // the JSON body; nil for none
	out    any  // receives the JSON answer; nil to discard it
	public bool // sent without a credential and never refreshed
}

// call sends an authenticated request.
func (c *Client) call(ctx context.Context, method, path string, query url.Values, in, out any) error {
	return c.do(ctx, request{method: method, path: path, query: query, in: in, out: out})
}

// callPublic sends a request without a credential.
func (c *Client) callPublic(ctx context.Context, method, path string, in, out any) error {
	return c.do(ctx, request{method: method, path: path, in: in, out: out, public: true})
}

// do sends r and, when it is answered 401 and a refresh token is set,
// refreshes once and sends it again.
func (c *Client) do(ctx context.Context, r request) error {
	var body []byte
	if r.in != nil {
		var err error
		if body, err = json.Marshal(r.in); err != nil {
			return cove.Wrap(err, "could not encode the request")
		}
	}
	var token string
	if !r.public {
		token = c.token()
	}
	err := c.send(ctx, r, body, token)
	if r.public || !isUnauthorized(err) || !c.canRefresh() {
		return err
	}
	if token, err = c.refreshAfter(ctx, token); err != nil {
		return err
	}
	return c.send(ctx, r, body, token)
}

// isUnauthorized reports whether err is the server's 401, as opposed to a
// failure of the client.
func isUnauthorized(err error) bool {
	var e *cove.Error
	return errors.As(err, &e) && e.Code == cove.Unauthenticated && e.Err == nil
}

func (c *Client) token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.access
}

func (c *Client) canRefresh() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refresh != ""
}

// setSession adopts tokens from a login or refresh.
func (c *Client) setSession(t *identity.Tokens) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.access, c.refresh = t.AccessToken, t.RefreshToken
}

// refreshAfter renews the access token that was refused, stale, and
// returns the token to retry with. When another call has renewed it in the
// meantime, that token is returned without a second refresh.
func (c *Client) refreshAfter(ctx context.Context, stale string) (string, error) {
	c.refreshing.Lock()
	defer c.refreshing.Unlock()
	c.mu.Lock()
	access, refresh := c.access, c.refresh
	c.mu.Unlock()
	if access != stale {
		return access, nil
	}
	var t identity.Tokens
	if err := c.callPublic(ctx, http.MethodPost, "/api/v1/refresh", httpapi.RefreshInput{RefreshToken: refresh}, &t); err != nil {
		return "", err
	}
	c.setSession(&t)
	if c.onRefresh != nil {
		c.onRefresh(&t)
	}
	return t.AccessToken, nil
}

// send makes one HTTP exchange and decodes its answer into r.out.
func (c *Client) send(ctx context.Context, r request, body []byte, token string) error {
	resp, err := c.roundTrip(ctx, r, body, token)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return c.decodeError(resp)
	}
	if r.out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(r.out); err != nil {
		return &cove.Error{Code: cove.Internal, Message: fmt.Sprintf("the server at %s answered %s %s with something other than Cove's JSON; check --server", c.base, r.method, r.path), Err: err}
	}
	return nil
}

// roundTrip sends the request and returns the response of any status. A
// failure to get one is Unavailable.
func (c *Client) roundTrip(ctx context.Context, r request, body []byte, token string) (*http.Response, error) {
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, rd)
	if err != nil {
		return nil, cove.Wrap(err, "could not build the request")
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, &cove.Error{Code: cove.Unavailable, Message: "the request to the server was canceled or timed out", Err: err}
		}
		if msg, ok := untrusted(err); ok {
			return nil, &cove.Error{Code: cove.Unauthenticated, Message: fmt.Sprintf("the server at %s is not trusted: %s; "+
				"pass the CA fingerprint `cove serve` printed with --ca-fingerprint, or its chain with --ca-file", c.base, msg), Err: err}
		}
		return nil, &cove.Error{Code: cove.Unavailable, Message: fmt.Sprintf("the server at %s could not be reached; check --server", c.base), Err: err}
	}
	return resp, nil
}

// untrusted reports whether err is the client refusing the server's
// certificate, and why.
func untrusted(err error) (string, bool) {
	var (
		unknown  x509.UnknownAuthorityError
		host     x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
		pinned   *cove.Error
		recordHd tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &pinned):
		return pinned.Message, true
	case errors.As(err, &unknown):
		return "its certificate is signed by an unknown authority", true
	case errors.As(err, &host):
		return host.Error(), true
	case errors.As(err, &invalid):
		return invalid.Error(), true
	case errors.As(err, &verify):
		return verify.Err.Error(), true
	case errors.As(err, &recordHd):
		return "it does not speak TLS (is it plain http://?)", true
	}
	return "", false
}

// decodeError turns an error answer into a *cove.Error with the server's
// code, message and details. An answer that is not an httpapi.ErrorBody,
// such as one from a proxy, gets the code its status stands for.
func (c *Client) decodeError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var b httpapi.ErrorBody
	if json.Unmarshal(data, &b) == nil && b.Message != "" {
		code := b.Code
		if !knownCode(code) {
			code = codeOfStatus(resp.StatusCode)
		}
		return &cove.Error{Code: code, Message: b.Message, Details: b.Details}
	}
	if strings.HasPrefix(c.base, "http://") && bytes.Contains(data, []byte("HTTP request to an HTTPS server")) {
		return cove.Errorf(cove.Invalid, "the server at %s serves HTTPS: use %s", c.base, "https://"+strings.TrimPrefix(c.base, "http://"))
	}
	return &cove.Error{Code: codeOfStatus(resp.StatusCode), Message: fmt.Sprintf("the server at %s answered %s, not with a Cove error; check --server", c.base, resp.Status)}
}

func knownCode(code cove.Code) bool {
	for _, c := range cove.Codes {
		if c == code {
			return true
		}
	}
	return false
}

// codeOfStatus inverts httpapi.StatusOf, the server's one table, for
// answers without a code.
func codeOfStatus(status int) cove.Code {
	for _, code := range cove.Codes {
		if httpapi.StatusOf(code) == status {
			return code
		}
	}
	switch {
	case status == http.StatusBadGateway || status == http.StatusGatewayTimeout:
		return cove.Unavailable
	case status >= 400 && status < 500:
		return cove.Invalid
	default:
		return cove.Internal
	}
}

// path joins escaped segments under /api/v1.
func path(segments ...string) string {
	var b strings.Builder
	b.WriteString("/api/v1")
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// one calls an authenticated route that answers one object.
func one[T any](ctx context.Context, c *Client, method, route string, in any) (*T, error) {
	var v T
	if err := c.call(ctx, method, route, nil, in, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// page calls an authenticated list route.
func page[T any](ctx context.Context, c *Client, route string, q url.Values) ([]T, string, error) {
	var l httpapi.List[T]
	if err := c.call(ctx, http.MethodGet, route, q, nil, &l); err != nil {
		return nil, "", err
	}
	return l.Items, l.NextCursor, nil
}

// Health reports whether the server process is up (GET /healthz).
func (c *Client) Health(ctx context.Context) error {
	return c.callPublic(ctx, http.MethodGet, "/healthz", nil, nil)
}

// Readiness is the answer of /readyz: whether the server can serve, and
// the state of each dependency by name ("ok" or what is wrong).
type Readiness struct {
	Ready  bool              `json:"ready"`
	Checks map[string]string `json:"checks"`
}

// Ready asks whether the server and its dependencies can serve (GET
// /readyz). When they cannot, it returns the readiness together with an
// Unavailable error naming the failing checks.
func (c *Client) Ready(ctx context.Context) (*Readiness, error) {
	resp, err := c.roundTrip(ctx, request{method: http.MethodGet, path: "/readyz"}, nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var rd Readiness
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return nil, c.decodeError(resp)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxErrorBody)).Decode(&rd); err != nil {
		return nil, &cove.Error{Code: cove.Internal, Message: fmt.Sprintf("the server at %s answered /readyz with something other than Cove's JSON; check --server", c.base), Err: err}
	}
	if !rd.Ready {
		var failing []string
		for name, state := range rd.Checks {
			if state != "ok" {
				failing = append(failing, name+": "+state)
			}
		}
		slices.Sort(failing)
		return &rd, cove.Errorf(cove.Unavailable, "the server is not ready: %s", strings.Join(failing, "; "))
	}
	return &rd, nil
}
