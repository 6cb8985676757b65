package httpapi_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/covecompute/cove/httpapi"
	"github.com/covecompute/cove/runproto"
)

// TestAppendLogLine: the log stream's encoding of a line is json.Marshal's,
// byte for byte.
func TestAppendLogLine(t *testing.T) {
	at := time.Date(2026, 11, 22, 3, 4, 5, 123456789, time.UTC)
	for _, l := range []runproto.LogLine{
		{Seq: 1, Time: at, Stream: "stdout", Text: "hello"},
		{Seq: 1 << 40, Time: at.In(time.FixedZone("x", 3600)), Stream: "stderr", Text: ""},
		{Seq: 7, Time: time.Time{}, Stream: "stdout", Text: `<script>"quotes" & \back\slash</script>`},
		{Seq: 8, Time: at, Stream: "stdout", Text: "tab\tnewline\ncontrol\x01\x1f del\x7f"},
		{Seq: 9, Time: at, Stream: "stdout", Text: "unicode é 日本 \u2028 \u2029 \ufffd 🙂"},
	} {
		want, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if got := httpapi.AppendLogLine(nil, l); string(got) != string(want) {
			t.Errorf("line %d:\n got %s\nwant %s", l.Seq, got, want)
		}
	}
}

func BenchmarkAppendLogLine(b *testing.B) {
	l := runproto.LogLine{Seq: 123456, Time: time.Now(), Stream: "stdout", Text: "line 123456 of a chatty algorithm"}
	b.Run("append", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = httpapi.AppendLogLine(buf[:0], l)
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(l)
		}
	})
}
