package cove

import (
	"errors"
	"fmt"
)

// Code classifies an error. The set is closed: every error that crosses a
// package boundary carries one of these, and the HTTP and NATS adapters map
// them to statuses in one table each.
type Code string

// The error codes. Keep docs/api.md in step when adding one.
const (
	Invalid         Code = "invalid"         // the request is malformed or fails validation
	NotFound        Code = "not_found"       // the target does not exist or the caller may not know it does
	Conflict        Code = "conflict"        // the target exists already or is in the wrong state
	Unauthenticated Code = "unauthenticated" // no credential, or a bad, expired or revoked one
	Forbidden       Code = "forbidden"       // the caller is known but not allowed
	TooLarge        Code = "too_large"       // the request body is over its limit
	RateLimited     Code = "rate_limited"    // too many attempts; retry later
	Unavailable     Code = "unavailable"     // a dependency is down or no capacity; retry later
	Internal        Code = "internal"        // a bug or an unexpected failure; details are logged, not shown
)

// Codes lists every code, for tables and tests that must cover them all.
var Codes = []Code{Invalid, NotFound, Conflict, Unauthenticated, Forbidden, TooLarge, RateLimited, Unavailable, Internal}

// Error is the one error type of Cove. Message is safe to show to a user;
// the wrapped Err is internal detail and is logged, never sent.
type Error struct {
	Code    Code
	Message string
	Details []Detail
	Err     error
}

// Detail names one problem with one part of a request, such as a field that
// fails validation or one blocker of a dry run.
type Detail struct {
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// Error returns the code and message, and the internal cause when present.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an error with code and a user-safe formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an internal error that keeps err as its cause and shows the
// user only msg.
func Wrap(err error, msg string) *Error {
	return &Error{Code: Internal, Message: msg, Err: err}
}

// WithDetails returns a copy of e carrying details.
func (e *Error) WithDetails(details ...Detail) *Error {
	c := *e
	c.Details = append(append([]Detail(nil), e.Details...), details...)
	return &c
}

// ErrorCode returns the code of err: the code of the first *Error in its
// chain, Internal for any other error, and "" for nil.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// ErrorMessage returns the user-safe message of err. Errors that are not
// *Error are internal, and their text is never shown.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ErrorDetails returns the details of the first *Error in err's chain.
func ErrorDetails(err error) []Detail {
	var e *Error
	if errors.As(err, &e) {
		return e.Details
	}
	return nil
}
