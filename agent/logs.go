package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/runproto"
)

// Streams of the algorithm's output.
const (
	streamStdout = "stdout"
	streamStderr = "stderr"
)

// How the algorithm's output becomes log messages.
const (
	// maxLineBytes splits longer lines, so that one line without a newline
	// cannot hold the agent's memory or exceed a message.
	maxLineBytes = 64 << 10
	// A batch is sent when it holds batchLines lines or about batchBytes
	// of JSON, or at the next tick of flushInterval.
	batchLines    = 256
	batchBytes    = 64 << 10
	flushInterval = 100 * time.Millisecond
	// batchMaxBytes is what a batch may never exceed: a line goes in the
	// next batch rather than push the current one over it. A line
	// of maxLineBytes control characters escapes to six times its size.
	batchMaxBytes = 768 << 10
	// lineOverhead is the JSON around one line's text.
	lineOverhead = 96
)

// How log batches reach the control plane. Each batch is a request on
// RunLogs, answered once the control plane has stored it; a batch is sent
// again, the same bytes with the same first line, until it is answered.
const (
	// logWindow is how many batches may be unacknowledged at once, counted
	// from the oldest unacknowledged one, so that a reader never has to
	// hold more than that many back while it waits for one sent again.
	logWindow = 16
	// logQueue is how many batches may wait for room in the window; beyond
	// that the algorithm's writes wait, so a slow control plane slows the
	// algorithm down rather than lose its output or fill memory.
	logQueue = 4
	// logRetryDelay is the pause before a batch is sent again, doubled at
	// every further attempt up to logRetryMaxDelay.
	logRetryDelay    = 100 * time.Millisecond
	logRetryMaxDelay = 5 * time.Second
	// logDrainTimeout bounds how long close waits for the last batches to
	// be acknowledged.
	logDrainTimeout = 2 * time.Minute
)

// logRequestTimeout is how long the agent waits for the answer to one log
// request before it sends the batch again. The control plane gives storing
// a batch 5 s, so its error answer comes first. A variable for tests.
var logRequestTimeout = 10 * time.Second

// logSink turns what the algorithm writes on stdout and stderr into
// numbered lines and sends them in runproto.LogBatch requests on RunLogs,
// at most logWindow unacknowledged. Lines are numbered across both streams
// in the order they end. Writes never fail: the algorithm's output must not
// depend on NATS, and bytes that are not UTF-8 are replaced, never refused.
// They wait, though, while the control plane is behind.
type logSink struct {
	nc         *nats.Conn
	subject    string
	log        *slog.Logger
	maxPayload int
	// ctx ends with the run, or when close gives up: batches not
	// acknowledged by then are abandoned.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	seq     int64 // lines made
	batch   []runproto.LogLine
	size    int       // JSON bytes of batch, estimated from above
	partial [2][]byte // the unfinished line of each stream
	closed  bool
	warned  bool

	queue chan *logBatch // batches made, for the sender; closed by close

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{} // the ticker has returned
	sent     chan struct{} // the sender has returned
	acked    int64         // lines acknowledged; the sender's until sent is closed
	refused  int64         // lines the control plane refused; likewise
}

// logBatch is one batch on its way.
type logBatch struct {
	data  []byte
	first int64 // Seq of its first line: names the batch and its answer
	lines int64
	tries int
	// waiting: the batch waits until due for the answer to its last try;
	// otherwise it is sent again at due.
	waiting bool
	due     time.Time
	done    bool // acknowledged, or refused for good
}

// newLogSink returns a sink that sends on subject until ctx ends. Errors:
// Unavailable when it cannot subscribe to the run's inbox for the answers.
func newLogSink(ctx context.Context, nc *nats.Conn, subject string, log *slog.Logger) (*logSink, error) {
	rs, err := newReplies(nc, logWindow)
	if err != nil {
		return nil, err
	}
	s := &logSink{
		nc:         nc,
		subject:    subject,
		log:        log,
		maxPayload: int(nc.MaxPayload()),
		queue:      make(chan *logBatch, logQueue),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		sent:       make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	go s.tick()
	go s.send(rs)
	return s, nil
}

// tick sends the batch every flushInterval, so that lines do not wait long.
func (s *logSink) tick() {
	defer close(s.done)
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.mu.Lock()
			s.flush()
			s.mu.Unlock()
		}
	}
}

// writer returns the io.Writer of one stream.
func (s *logSink) writer(stream string) io.Writer {
	i := 0
	if stream == streamStderr {
		i = 1
	}
	return streamWriter{s: s, i: i}
}

type streamWriter struct {
	s *logSink
	i int
}

func (w streamWriter) Write(p []byte) (int, error) {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed && s.ctx.Err() == nil { // once the run is over, output goes nowhere
		s.write(w.i, p)
	}
	return len(p), nil
}

func streamName(i int) string {
	if i == 1 {
		return streamStderr
	}
	return streamStdout
}

// write splits p into lines, keeping an unfinished one for the next write.
func (s *logSink) write(i int, p []byte) {
	for len(p) > 0 {
		nl := bytes.IndexByte(p, '\n')
		if nl < 0 {
			s.partial[i] = append(s.partial[i], p...)
			for len(s.partial[i]) >= maxLineBytes {
				cut := splitPoint(s.partial[i][:maxLineBytes])
				s.line(i, s.partial[i][:cut])
				s.partial[i] = append(s.partial[i][:0], s.partial[i][cut:]...)
			}
			return
		}
		line := p[:nl]
		if len(s.partial[i]) > 0 {
			line = append(s.partial[i], line...)
			s.partial[i] = line[:0]
		}
		s.longLine(i, bytes.TrimSuffix(line, []byte{'\r'}))
		p = p[nl+1:]
	}
}

// longLine emits b as one line, or several of maxLineBytes at most.
func (s *logSink) longLine(i int, b []byte) {
	for len(b) > maxLineBytes {
		cut := splitPoint(b[:maxLineBytes])
		s.line(i, b[:cut])
		b = b[cut:]
	}
	s.line(i, b)
}

// splitPoint is where to cut b so as not to split a UTF-8 sequence: before
// an incomplete one at its end, or at its end.
func splitPoint(b []byte) int {
	for k := 1; k <= utf8.UTFMax-1 && k < len(b); k++ {
		if utf8.RuneStart(b[len(b)-k]) {
			if !utf8.FullRune(b[len(b)-k:]) {
				return len(b) - k
			}
			break
		}
	}
	return len(b)
}

// line adds one line to the batch.
func (s *logSink) line(i int, b []byte) {
	text := string(b)
	if !utf8.ValidString(text) {
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	n := lineOverhead + jsonLen(text)
	if len(s.batch) > 0 && s.size+n > batchMaxBytes {
		s.flush()
	}
	s.seq++
	s.batch = append(s.batch, runproto.LogLine{Seq: s.seq, Time: time.Now().UTC(), Stream: streamName(i), Text: text})
	s.size += n
	if len(s.batch) >= batchLines || s.size >= batchBytes {
		s.flush()
	}
}

// jsonLen is at least the length of s encoded as a JSON string.
func jsonLen(s string) int {
	n := 2
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c == '<' || c == '>' || c == '&' || c == 0xe2: // 0xe2: U+2028, U+2029
			n += 6
		case c == '"' || c == '\\':
			n += 2
		default:
			n++
		}
	}
	return n
}

// flush hands the batch to the sender, waiting while the sender has no
// room for it. s.mu is held.
func (s *logSink) flush() {
	if len(s.batch) == 0 || s.closed {
		return
	}
	s.enqueue(s.batch)
	clear(s.batch)
	s.batch, s.size = s.batch[:0], 0
}

func (s *logSink) enqueue(lines []runproto.LogLine) {
	b, err := json.Marshal(runproto.LogBatch{Lines: lines})
	if err == nil && len(b) > s.maxPayload-1024 && len(lines) > 1 {
		// The estimate missed (it cannot, short of a bug); halve rather
		// than lose the lines.
		s.enqueue(lines[:len(lines)/2])
		s.enqueue(lines[len(lines)/2:])
		return
	}
	if err != nil {
		if !s.warned {
			s.log.Warn("cannot encode the algorithm's logs", "err", err)
			s.warned = true
		}
		return
	}
	select {
	case s.queue <- &logBatch{data: b, first: lines[0].Seq, lines: int64(len(lines))}:
	case <-s.ctx.Done(): // the run is over; so are its logs
	}
}

// send sends the batches of the queue, at most logWindow unacknowledged,
// and each again until the control plane acknowledges it, until the queue
// is closed and every batch acknowledged, or ctx ends.
func (s *logSink) send(rs *replies) {
	defer close(s.sent)
	defer rs.close()
	var window []*logBatch // from the oldest unacknowledged batch, in order
	queue := s.queue
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		for len(window) > 0 && window[0].done {
			window[0] = nil
			window = window[1:]
		}
		if queue == nil && len(window) == 0 {
			return
		}
		in := queue
		if len(window) >= logWindow {
			in = nil
		}
		var next time.Time
		for _, b := range window {
			if !b.done && (next.IsZero() || b.due.Before(next)) {
				next = b.due
			}
		}
		if next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(time.Until(next))
		}
		select {
		case <-s.ctx.Done():
			return
		case b, ok := <-in:
			if !ok {
				queue = nil
				continue
			}
			window = append(window, b)
			s.try(rs, b)
		case m := <-rs.ch:
			s.answer(rs, window, m)
		case now := <-timer.C:
			for _, b := range window {
				switch {
				case b.done || b.due.After(now):
				case b.waiting:
					// No answer: the request or its answer was lost,
					// say dropped by a control plane with too much to do.
					b.waiting, b.due = false, now.Add(logRetryAfter(b.tries))
				default:
					s.try(rs, b)
				}
			}
		}
	}
}

// try sends b once.
func (s *logSink) try(rs *replies, b *logBatch) {
	b.tries++
	if err := s.nc.PublishRequest(s.subject, rs.prefix+"."+strconv.FormatInt(b.first, 10), b.data); err != nil {
		b.waiting, b.due = false, time.Now().Add(logRetryAfter(b.tries))
		return
	}
	b.waiting, b.due = true, time.Now().Add(logRequestTimeout)
}

// answer applies the control plane's answer to a batch in the window: the
// batch is done, or is sent again when the control plane is unavailable.
// Any other error is final: sending the same batch again cannot help.
func (s *logSink) answer(rs *replies, window []*logBatch, m *nats.Msg) {
	first, err := strconv.ParseInt(strings.TrimPrefix(m.Subject, rs.prefix+"."), 10, 64)
	if err != nil {
		return
	}
	i := slices.IndexFunc(window, func(b *logBatch) bool { return b.first == first && !b.done })
	if i < 0 {
		return // the answer to an earlier try of a batch acknowledged since
	}
	b := window[i]
	err = replyError(m)
	if err == nil {
		err = checkReply(m.Data)
	}
	switch {
	case err == nil:
		b.done = true
		s.acked += b.lines
	case cove.ErrorCode(err) == cove.Unavailable:
		if b.waiting {
			b.waiting, b.due = false, time.Now().Add(logRetryAfter(b.tries))
		}
	default:
		b.done = true
		if s.refused == 0 {
			s.log.Warn("the control plane refused the algorithm's logs", "first_line", b.first, "err", err)
		}
		s.refused += b.lines
	}
}

// logRetryAfter is the pause after the tries-th try of a batch.
func logRetryAfter(tries int) time.Duration {
	return min(logRetryDelay<<min(max(tries-1, 0), 10), logRetryMaxDelay)
}

// endLines emits the unfinished line of each stream, once the algorithm
// has stopped writing.
func (s *logSink) endLines() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endLinesLocked()
}

func (s *logSink) endLinesLocked() {
	if s.closed {
		return
	}
	for i := range s.partial {
		if len(s.partial[i]) > 0 {
			s.longLine(i, bytes.TrimSuffix(s.partial[i], []byte{'\r'}))
			s.partial[i] = nil
		}
	}
}

// close sends what is left and waits until the control plane has
// acknowledged every batch, the run ends, or logDrainTimeout passes. It
// returns how many lines the control plane acknowledged. Writes after close
// are dropped. It is safe to call more than once.
func (s *logSink) close() int64 {
	giveUp := time.AfterFunc(logDrainTimeout, s.cancel)
	s.mu.Lock()
	if !s.closed {
		s.endLinesLocked()
		s.flush()
		s.closed = true
		close(s.queue)
	}
	made := s.seq
	s.mu.Unlock()
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
	<-s.sent
	if !giveUp.Stop() {
		s.log.Warn("the control plane did not acknowledge the algorithm's last logs in time", "wait", logDrainTimeout)
	}
	aborted := s.ctx.Err() != nil // the run was stopped: nobody wants the rest
	s.cancel()
	if s.acked < made && !aborted {
		s.log.Warn("some of the algorithm's logs were not stored", "lines", made, "stored", s.acked, "refused", s.refused)
	}
	return s.acked
}
