package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/runproto"
)

// reconnects bounds how long the agent tries to get its connection back:
// past runproto.AgentLostAfter the control plane has given up on the run
// anyway.
const (
	reconnects    = 15
	reconnectWait = time.Second
)

// connect opens the run's NATS connection with the credential held in
// memory: the seed never touches the disk. fatal runs with errConnectionLost
// when the connection is gone for good, and with errDenied when the server
// refuses a subject: the credential is not the run's, and nothing the agent
// does can work.
func connect(cfg Config, log *slog.Logger, fatal func(error)) (*nats.Conn, error) {
	token, err := jwt.ParseDecoratedJWT(cfg.Creds)
	if err != nil {
		return nil, &cove.Error{Code: cove.Invalid, Message: "the run's NATS credential holds no user JWT", Err: err}
	}
	kp, err := nkeys.ParseDecoratedNKey(cfg.Creds)
	if err != nil {
		return nil, &cove.Error{Code: cove.Invalid, Message: "the run's NATS credential holds no nkey seed", Err: err}
	}
	if pub, err := kp.PublicKey(); err != nil || !nkeys.IsValidPublicUserKey(pub) {
		kp.Wipe()
		return nil, cove.Errorf(cove.Invalid, "the run's NATS credential does not hold a user key")
	}
	nc, err := nats.Connect(cfg.NATSURL,
		nats.Name("cove agent "+cfg.RunID),
		nats.UserJWT(
			func() (string, error) { return token, nil },
			func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) },
		),
		// The credential allows replies only in the run's inbox.
		nats.CustomInboxPrefix(natsbus.RunInboxPrefix(cfg.RunID)),
		nats.MaxReconnects(reconnects),
		nats.ReconnectWait(reconnectWait),
		nats.ClosedHandler(func(*nats.Conn) { fatal(errConnectionLost) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("NATS error", "subject", subject, "err", err)
			if errors.Is(err, nats.ErrPermissionViolation) {
				fatal(fmt.Errorf("%w: %v", errDenied, err))
			}
		}),
	)
	if err != nil {
		kp.Wipe()
		return nil, &cove.Error{Code: cove.Unavailable, Message: "cannot connect to NATS", Err: err}
	}
	// The key signs the connect nonce of every reconnect, so it lives as
	// long as the connection.
	go func() {
		<-nc.StatusChanged(nats.CLOSED)
		kp.Wipe()
	}()
	if nc.MaxPayload() < runproto.ChunkSize+64<<10 {
		nc.Close()
		return nil, cove.Errorf(cove.Unavailable, "the NATS server's maximum payload (%d bytes) is below the chunk size", nc.MaxPayload())
	}
	return nc, nil
}

// publishJSON publishes v as JSON on subject.
func publishJSON(nc *nats.Conn, subject string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return cove.Wrap(err, "cannot encode a message")
	}
	if err := nc.Publish(subject, b); err != nil {
		return &cove.Error{Code: cove.Unavailable, Message: "cannot publish to NATS", Err: err}
	}
	return nil
}

// respondJSON answers msg with v as JSON.
func respondJSON(msg *nats.Msg, v any, log *slog.Logger) {
	b, err := json.Marshal(v)
	if err == nil {
		err = msg.Respond(b)
	}
	if err != nil {
		log.Warn("cannot answer a control request", "err", err)
	}
}

// unmarshal decodes a JSON message, with an Invalid error a peer may see.
func unmarshal(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return &cove.Error{Code: cove.Invalid, Message: "the message is not valid JSON of the expected shape", Err: err}
	}
	return nil
}

// Retries of requests that got no answer. Every request of the protocol
// may be repeated (a lost answer is answered again), except a result
// begin; the first retry waits retryDelay, each next one twice as long, so
// a few attempts ride out a control plane restarting.
const (
	attempts   = 4
	retryDelay = time.Second
)

// request sends a request to the control plane and waits up to timeout for
// its reply, trying up to tries times while nobody answers. It returns the
// reply once it has checked that it is not an error (see replyError); an
// error the control plane answered is final.
func request(ctx context.Context, nc *nats.Conn, msg *nats.Msg, timeout time.Duration, tries int) (*nats.Msg, error) {
	var err error
	for i := range max(tries, 1) {
		if i > 0 {
			if err := sleep(ctx, retryDelay<<(i-1)); err != nil {
				return nil, err
			}
		}
		var reply *nats.Msg
		if reply, err = requestOnce(ctx, nc, msg, timeout); err == nil {
			if err := replyError(reply); err != nil {
				return nil, err
			}
			return reply, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, err
}

// requestOnce sends msg once. Its errors are all Unavailable: nobody
// answered.
func requestOnce(ctx context.Context, nc *nats.Conn, msg *nats.Msg, timeout time.Duration) (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, err := nc.RequestMsgWithContext(ctx, msg)
	switch {
	case err == nil:
		if noResponders(reply) {
			return nil, &cove.Error{Code: cove.Unavailable, Message: "the control plane is not answering", Err: nats.ErrNoResponders}
		}
		return reply, nil
	case errors.Is(err, nats.ErrNoResponders):
		return nil, &cove.Error{Code: cove.Unavailable, Message: "the control plane is not answering", Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return nil, &cove.Error{Code: cove.Unavailable, Message: "the control plane did not answer in time", Err: err}
	default:
		return nil, &cove.Error{Code: cove.Unavailable, Message: "a request to the control plane failed", Err: err}
	}
}

// requestJSON sends op with body v and decodes the reply into out, if out
// is not nil. A JSON reply's own Error field is the caller's to check.
func requestJSON(ctx context.Context, nc *nats.Conn, subject, op string, v, out any, timeout time.Duration, tries int) error {
	msg := nats.NewMsg(subject)
	if op != "" {
		msg.Header.Set(runproto.HeaderOp, op)
	}
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			return cove.Wrap(err, "cannot encode a request")
		}
		msg.Data = b
	}
	reply, err := request(ctx, nc, msg, timeout, tries)
	if err != nil {
		return err
	}
	if out == nil {
		return checkReply(reply.Data)
	}
	if err := json.Unmarshal(reply.Data, out); err != nil {
		return &cove.Error{Code: cove.Internal, Message: "the control plane sent a reply the agent cannot read", Err: err}
	}
	return nil
}

// replyError returns the error a reply carries in its headers: a NATS
// status (no responders) or a cove.Error in HeaderErrorCode and
// HeaderErrorMessage.
func replyError(msg *nats.Msg) error {
	if msg.Header == nil {
		return nil
	}
	if noResponders(msg) {
		return &cove.Error{Code: cove.Unavailable, Message: "the control plane is not answering", Err: nats.ErrNoResponders}
	} else if status := msg.Header.Get("Status"); status != "" && status != "100" && len(msg.Data) == 0 {
		return cove.Errorf(cove.Unavailable, "the control plane answered with NATS status %s", status)
	}
	if code := msg.Header.Get(runproto.HeaderErrorCode); code != "" {
		e := runproto.Error{Code: cove.Code(code), Message: msg.Header.Get(runproto.HeaderErrorMessage)}
		if e.Message == "" {
			e.Message = "the control plane refused the request"
		}
		return e.Err()
	}
	return nil
}

// noResponders reports whether msg is the server's answer that nobody
// subscribes to the request's subject.
func noResponders(msg *nats.Msg) bool {
	return msg.Header != nil && msg.Header.Get("Status") == "503" && len(msg.Data) == 0
}

// checkReply checks the body of an acknowledgement: empty, or a
// runproto.Reply whose Error is nil.
func checkReply(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	var r runproto.Reply
	if err := json.Unmarshal(data, &r); err != nil {
		return &cove.Error{Code: cove.Internal, Message: "the control plane sent a reply the agent cannot read", Err: err}
	}
	return r.Error.Err()
}

// replies collects the replies to many requests in flight on one
// subscription: request i asks for its reply on <inbox>.<i>. Requests are
// published in order from one goroutine; replies may come back in any
// order. A handler subscription, not a synchronous one, because NextMsg
// swallows the server's "no responders" answer and with it the index of
// the request it answers.
type replies struct {
	prefix string
	sub    *nats.Subscription
	ch     chan *nats.Msg
	done   chan struct{}
}

func newReplies(nc *nats.Conn, window int) (*replies, error) {
	rs := &replies{prefix: nc.NewInbox(), ch: make(chan *nats.Msg, 2*window), done: make(chan struct{})}
	sub, err := nc.Subscribe(rs.prefix+".*", func(m *nats.Msg) {
		select {
		case rs.ch <- m:
		case <-rs.done:
		}
	})
	if err != nil {
		return nil, &cove.Error{Code: cove.Unavailable, Message: "cannot subscribe to the run's inbox", Err: err}
	}
	rs.sub = sub
	return rs, nil
}

func (rs *replies) subject(i int) string { return rs.prefix + "." + strconv.Itoa(i) }

// next returns the next reply and the index of its request. It fails with
// Unavailable when no reply came for timeout.
func (rs *replies) next(ctx context.Context, timeout time.Duration) (int, *nats.Msg, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		case <-t.C:
			return 0, nil, cove.Errorf(cove.Unavailable, "the control plane did not answer in time")
		case msg := <-rs.ch:
			i, err := strconv.Atoi(strings.TrimPrefix(msg.Subject, rs.prefix+"."))
			if err != nil || i < 0 {
				continue // not ours to read: ignore rather than trust
			}
			return i, msg, nil
		}
	}
}

func (rs *replies) close() {
	_ = rs.sub.Unsubscribe()
	close(rs.done)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// makeWritable lets the owner remove everything under dir, in case the
// algorithm left directories without write permission.
func makeWritable(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
}
