package agent

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

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
	// A batch is published when it holds batchLines lines or about
	// batchBytes of JSON, or flushInterval after its first line.
	batchLines    = 256
	batchBytes    = 64 << 10
	flushInterval = 100 * time.Millisecond
	// batchMaxBytes is what a batch may never exceed: a line is published
	// in the next batch rather than push the current one over it. A line
	// of maxLineBytes control characters escapes to six times its size.
	batchMaxBytes = 768 << 10
	// lineOverhead is the JSON around one line's text.
	lineOverhead = 96
)

// logSink turns what the algorithm writes on stdout and stderr into
// numbered lines and publishes them in runproto.LogBatch messages on
// RunLogs. Lines are numbered across both streams in the order they end.
// Writes never fail: the algorithm's output must not depend on NATS, and
// bytes that are not UTF-8 are replaced, never refused.
type logSink struct {
	nc         *nats.Conn
	subject    string
	log        *slog.Logger
	maxPayload int

	mu        sync.Mutex
	seq       int64 // lines made
	published int64 // lines published
	batch     []runproto.LogLine
	size      int       // JSON bytes of batch, estimated from above
	partial   [2][]byte // the unfinished line of each stream
	closed    bool
	warned    bool

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func newLogSink(nc *nats.Conn, subject string, log *slog.Logger) *logSink {
	s := &logSink{
		nc:         nc,
		subject:    subject,
		log:        log,
		maxPayload: int(nc.MaxPayload()),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	go s.tick()
	return s
}

// tick publishes a batch that has waited flushInterval.
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
	if !s.closed {
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

// flush publishes the batch. Lines that cannot be published are dropped
// and not counted: the last event reports how many were.
func (s *logSink) flush() {
	if len(s.batch) == 0 {
		return
	}
	s.publish(s.batch)
	clear(s.batch)
	s.batch, s.size = s.batch[:0], 0
}

func (s *logSink) publish(lines []runproto.LogLine) {
	b, err := json.Marshal(runproto.LogBatch{Lines: lines})
	if err == nil && len(b) > s.maxPayload-1024 && len(lines) > 1 {
		// The estimate missed (it cannot, short of a bug); halve rather
		// than lose the lines.
		s.publish(lines[:len(lines)/2])
		s.publish(lines[len(lines)/2:])
		return
	}
	if err == nil {
		err = s.nc.Publish(s.subject, b)
	}
	if err != nil {
		if !s.warned {
			s.log.Warn("cannot publish the algorithm's logs", "err", err)
			s.warned = true
		}
		return
	}
	s.published += int64(len(lines))
}

// endLines emits the unfinished line of each stream, once the algorithm
// has stopped writing.
func (s *logSink) endLines() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endLinesLocked()
}

func (s *logSink) endLinesLocked() {
	for i := range s.partial {
		if len(s.partial[i]) > 0 {
			s.longLine(i, bytes.TrimSuffix(s.partial[i], []byte{'\r'}))
			s.partial[i] = nil
		}
	}
}

// close publishes what is left and returns how many lines were published.
// Writes after close are dropped. It is safe to call more than once.
func (s *logSink) close() int64 {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.endLinesLocked()
		s.flush()
	}
	n := s.published
	s.mu.Unlock()
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
	return n
}
