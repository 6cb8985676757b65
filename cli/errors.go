package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/covecompute/cove"
)

// Exit statuses returned by ExitCode.
const (
	ExitOK          = 0
	ExitError       = 1 // any other failure
	ExitUsage       = 2 // a wrong command line, or input the server found invalid
	ExitDenied      = 3 // unauthenticated or forbidden
	ExitNotFound    = 4
	ExitConflict    = 5
	ExitUnavailable = 6 // the server cannot be reached or is not ready
)

// ExitCode returns the exit status for an error returned by the root
// command: 0 for nil, 2 for usage errors and invalid input, 3 when the
// caller is unauthenticated or forbidden, 4 not found, 5 conflict,
// 6 unavailable, and 1 for anything else.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var u *usageError
	if errors.As(err, &u) {
		return ExitUsage
	}
	var e *cove.Error
	if !errors.As(err, &e) {
		return ExitError
	}
	switch e.Code {
	case cove.Invalid:
		return ExitUsage
	case cove.Unauthenticated, cove.Forbidden:
		return ExitDenied
	case cove.NotFound:
		return ExitNotFound
	case cove.Conflict:
		return ExitConflict
	case cove.Unavailable:
		return ExitUnavailable
	default:
		return ExitError
	}
}

// usageError is a command line the CLI cannot run: a missing argument, a
// bad flag value.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// asUsage marks err, from cobra's own checks, as a usage error.
func asUsage(err error) error {
	var u *usageError
	if errors.As(err, &u) {
		return err
	}
	return &usageError{msg: err.Error()}
}

// shownError is an error as the user sees it: its message, one line per
// detail and a hint. cobra prints Error() after "error:"; Unwrap keeps the
// original for ExitCode.
type shownError struct {
	err  error
	text string
}

func (e *shownError) Error() string { return e.text }
func (e *shownError) Unwrap() error { return e.err }

// explain turns err into a shownError for cmd; nil stays nil.
func explain(cmd *cobra.Command, err error) error {
	if err == nil {
		return nil
	}
	var shown *shownError
	if errors.As(err, &shown) {
		return err
	}
	var b strings.Builder
	b.WriteString(messageOf(err))
	for _, d := range cove.ErrorDetails(err) {
		if d.Field != "" {
			fmt.Fprintf(&b, "\n  %s: %s", d.Field, d.Message)
		} else {
			fmt.Fprintf(&b, "\n  %s", d.Message)
		}
	}
	if h := hint(cmd, err); h != "" {
		b.WriteString("\nhint: " + h)
	}
	return &shownError{err: err, text: b.String()}
}

// messageOf returns the text to show for err: the user-safe message of a
// *cove.Error, else the error's own text, which in the CLI is written for
// its user.
func messageOf(err error) string {
	var e *cove.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}

// hint suggests what to do about the common failures.
func hint(cmd *cobra.Command, err error) string {
	var u *usageError
	if errors.As(err, &u) {
		return fmt.Sprintf("see `%s --help`", cmd.CommandPath())
	}
	var e *cove.Error
	if !errors.As(err, &e) {
		return ""
	}
	switch e.Code {
	case cove.Unauthenticated:
		switch {
		case cmd.Name() == "login" || cmd.Name() == "signup":
			return ""
		case os.Getenv(EnvToken) != "":
			return "check the personal access token in " + EnvToken + ", or unset it and run `cove login`"
		default:
			return "run `cove login`"
		}
	case cove.Unavailable:
		return "is the server running? check --server or " + EnvServer
	case cove.RateLimited:
		return "wait a minute and try again"
	}
	return ""
}
