package fga

import (
	"context"
	"errors"

	openfgav1 "github.com/openfga/api/proto/openfga/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/covecompute/cove"
)

// convert turns an error of the OpenFGA server, a gRPC status whose code is
// either a gRPC code or one of OpenFGA's own numbers, into a cove error.
// OpenFGA's text stays the internal cause: it quotes tuples and model
// internals that are no business of a user.
func convert(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &cove.Error{Code: cove.Unavailable, Message: "the authorization check did not finish in time; retry", Err: err}
	}
	code := status.Code(err)
	switch {
	case retryable(code):
		return &cove.Error{Code: cove.Unavailable, Message: "the authorization store is busy; retry", Err: err}
	case code == codes.Code(openfgav1.ErrorCode_authorization_model_resolution_too_complex):
		// The model is Cove's, not the caller's: a bug.
		return cove.Wrap(err, "authorization failed")
	case code == codes.InvalidArgument || isValidation(code):
		return &cove.Error{Code: cove.Invalid, Message: "malformed authorization subject, relation or object", Err: err}
	default:
		return cove.Wrap(err, "authorization failed")
	}
}

// retryable reports whether code says the store was busy or out of time
// rather than that the request was wrong.
func retryable(code codes.Code) bool {
	switch code {
	case codes.Canceled, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Unavailable,
		codes.Code(openfgav1.ErrorCode_cancelled),
		codes.Code(openfgav1.UnprocessableContentErrorCode_throttled_timeout_error),
		codes.Code(openfgav1.InternalErrorCode_deadline_exceeded),
		codes.Code(openfgav1.InternalErrorCode_resource_exhausted),
		codes.Code(openfgav1.InternalErrorCode_aborted),
		codes.Code(openfgav1.InternalErrorCode_unavailable):
		return true
	}
	return false
}

// isValidation reports whether code is in OpenFGA's range of validation
// errors (2000-2999): a bad type, relation, name or tuple.
func isValidation(code codes.Code) bool {
	return code >= codes.Code(openfgav1.ErrorCode_validation_error) && code < 3000
}

// unavailable is the error for a failed query of Cove's own on the
// database: most likely the database is down.
func unavailable(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return convert(ctx, err)
	}
	return &cove.Error{Code: cove.Unavailable, Message: "the authorization store is unavailable; retry", Err: err}
}
