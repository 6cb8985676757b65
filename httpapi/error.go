package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/covecompute/cove"
)

// statusOf is the one table from error codes to HTTP statuses.
var statusOf = map[cove.Code]int{
	cove.Invalid:         http.StatusBadRequest,
	cove.NotFound:        http.StatusNotFound,
	cove.Conflict:        http.StatusConflict,
	cove.Unauthenticated: http.StatusUnauthorized,
	cove.Forbidden:       http.StatusForbidden,
	cove.TooLarge:        http.StatusRequestEntityTooLarge,
	cove.RateLimited:     http.StatusTooManyRequests,
	cove.Unavailable:     http.StatusServiceUnavailable,
	cove.Internal:        http.StatusInternalServerError,
}

// StatusOf returns the HTTP status of an error code.
func StatusOf(c cove.Code) int {
	if s, ok := statusOf[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// ErrorBody is the one shape of every error response.
type ErrorBody struct {
	Code    cove.Code     `json:"code" jsonschema:"enum=invalid,enum=not_found,enum=conflict,enum=unauthenticated,enum=forbidden,enum=too_large,enum=rate_limited,enum=unavailable,enum=internal"`
	Message string        `json:"message"`
	Details []cove.Detail `json:"details,omitempty"`
}

// writeError writes err as an ErrorBody. Internal errors are logged with
// their cause and shown only as "internal error".
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	code := cove.ErrorCode(err)
	if code == cove.Internal && log != nil {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	body := ErrorBody{Code: code, Message: cove.ErrorMessage(err), Details: cove.ErrorDetails(err)}
	if code == cove.RateLimited {
		w.Header().Set("Retry-After", "60")
	}
	if code == cove.Unauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cove"`)
	}
	writeJSON(w, StatusOf(code), body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}
