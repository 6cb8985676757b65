// Package httpapi is the REST adapter: it decodes requests, calls the
// domain services and encodes their answers under /api/v1, with one error
// writer, one metrics middleware and an OpenAPI 3.1 document generated from
// the same route table that serves the requests.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/identity"
	"github.com/covecompute/cove/workspace"
)

// Pinger is a dependency /readyz checks.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Deps are the services the API serves.
type Deps struct {
	Identity  *identity.Service
	Workspace *workspace.Service
	Audit     *audit.Service
	// Ready lists the dependencies /readyz checks, by name.
	Ready map[string]Pinger
	// Registry collects the metrics; nil means a new registry.
	Registry *prometheus.Registry
	Log      *slog.Logger
	// MaxBodyBytes limits JSON request bodies.
	MaxBodyBytes int64
	// Version is reported by /api/v1/version.
	Version string
}

// Server is the HTTP handler of the API.
type Server struct {
	identity  *identity.Service
	workspace *workspace.Service
	audit     *audit.Service
	ready     map[string]Pinger
	log       *slog.Logger
	maxBody   int64
	version   string
	mux       *http.ServeMux
	routes    []*route
	metrics   metrics
	// nodes checks node client certificates; set by MountNodes.
	nodes NodeVerifier

	openapiOnce sync.Once
	openapi     []byte

	// streams ends with the server: long-lived responses (log streams)
	// watch it so that a shutdown does not wait for them.
	streams    context.Context
	endStreams context.CancelFunc
}

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// New builds the handler with every route.
func New(d Deps) *Server {
	reg := d.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{
		identity: d.Identity, workspace: d.Workspace, audit: d.Audit, ready: d.Ready,
		log: d.Log, maxBody: d.MaxBodyBytes, version: d.Version, mux: http.NewServeMux(),
		metrics: metrics{
			requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cove_http_requests_total", Help: "HTTP requests by route and status."}, []string{"route", "code"}),
			latency:  prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "cove_http_request_duration_seconds", Help: "HTTP request latency by route.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"route"}),
		},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.streams, s.endStreams = context.WithCancel(context.Background())
	if s.maxBody == 0 {
		s.maxBody = 1 << 20
	}
	reg.MustRegister(s.metrics.requests, s.metrics.latency)
	s.addIdentityRoutes()
	s.addWorkspaceRoutes()

	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.handleReady)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /api/v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(s.OpenAPI())
	})
	return s
}

// ServeHTTP answers unknown routes with the JSON error shape too.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" {
		writeError(w, r, s.log, cove.Errorf(cove.NotFound, "no such route: %s %s; see /api/v1/openapi.json", r.Method, r.URL.Path))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Route groups beyond identity and workspaces are added after New with
// their Mount methods (MountCatalog, MountComputations, MountNodes), each in
// its own file, before the server starts serving.

// Handle mounts another handler, such as the web UI, on the same mux.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// EndStreams ends every long-lived response, such as followed logs, so
// that a graceful shutdown need not wait for them; their clients resume
// with Last-Event-ID. Call it before http.Server.Shutdown.
func (s *Server) EndStreams() { s.endStreams() }

// OpenAPI returns the OpenAPI document, generated from the routes at its
// first use, so that it includes every route group mounted before serving.
func (s *Server) OpenAPI() []byte {
	s.openapiOnce.Do(func() { s.openapi = s.buildOpenAPI() })
	return s.openapi
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	checks := map[string]string{}
	ok := true
	for name, p := range s.ready {
		if err := p.Ping(ctx); err != nil {
			checks[name] = cove.ErrorMessage(err)
			ok = false
		} else {
			checks[name] = "ok"
		}
	}
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"ready": ok, "checks": checks})
}
