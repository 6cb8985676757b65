package natsbus_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/natsbus"
)

// TestEnsureStreamsMovesRunLogs: a RUN_LOGS stream of an older version,
// which captured what agents publish on RunLogs without acknowledging, is
// updated in place to capture only RunLogStore, acknowledged, and keeps
// what it holds.
func TestEnsureStreamsMovesRunLogs(t *testing.T) {
	t.Parallel()
	bus := MustOpen(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js := bus.JetStream()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: natsbus.StreamRunLogs, Subjects: []string{natsbus.AllRunLogs},
		Storage: jetstream.FileStorage, MaxBytes: 64 << 20, NoAck: true,
	}); err != nil {
		t.Fatalf("CreateStream: %v", err)
	}
	run := cove.NewID("run")
	if err := bus.Conn().Publish(natsbus.RunLogs(run), []byte("old")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the old log message", func() bool { return streamMsgs(t, bus, natsbus.StreamRunLogs) == 1 })

	MustEnsureStreams(t, bus)
	MustEnsureStreams(t, bus)
	s, err := js.Stream(ctx, natsbus.StreamRunLogs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if !slices.Equal(cfg.Subjects, []string{natsbus.AllRunLogStores}) || cfg.NoAck || cfg.Duplicates <= 0 {
		t.Fatalf("RUN_LOGS subjects %v, no ack %v, duplicate window %v", cfg.Subjects, cfg.NoAck, cfg.Duplicates)
	}
	if s, err := js.Stream(ctx, natsbus.StreamRunEvents); err != nil || !s.CachedInfo().Config.NoAck {
		t.Fatalf("RUN_EVENTS must not acknowledge what agents publish: %v", err)
	}

	// What agents send on RunLogs is no longer stored; what the control
	// plane stores is acknowledged, and a repeated message ID stored once.
	if err := bus.Conn().Publish(natsbus.RunLogs(run), []byte("agent")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		ack, err := js.Publish(ctx, natsbus.RunLogStore(run), []byte("stored"), jetstream.WithMsgID(run+"-1"))
		if err != nil || ack.Stream != natsbus.StreamRunLogs {
			t.Fatalf("Publish: %v, %+v", err, ack)
		}
	}
	if n := streamMsgs(t, bus, natsbus.StreamRunLogs); n != 2 {
		t.Errorf("RUN_LOGS holds %d messages, want the old one and one stored", n)
	}
}
