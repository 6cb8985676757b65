package natsbus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/covecompute/cove"
)

// Names of the JetStream streams EnsureStreams sets up.
const (
	StreamRunLogs   = "RUN_LOGS"
	StreamRunEvents = "RUN_EVENTS"
)

// streams returns the configuration of every stream Cove relies on.
//
// RUN_EVENTS has NoAck set because agents publish into it and may name any
// reply subject: with acks on, the server would send an acknowledgement to
// whatever an agent names, such as another run's RunControl, once per
// message. Agents publish events fire and forget; the control plane learns
// of anything that must not be lost by a request it answers.
//
// RUN_LOGS captures only RunLogStore, where nobody but the control plane may
// publish, so it acknowledges: the control plane stores each batch an agent
// sends with js.Publish and a message ID (deduplicated within the stream's
// duplicate window, 2 minutes by default) and answers the agent only once
// the stream has it.
func (b *Bus) streams() []jetstream.StreamConfig {
	base := jetstream.StreamConfig{
		Retention: jetstream.LimitsPolicy,
		Discard:   jetstream.DiscardOld,
		Storage:   jetstream.FileStorage,
		MaxAge:    b.cfg.StreamMaxAge,
		MaxBytes:  b.cfg.StreamMaxBytes,
		Replicas:  b.cfg.StreamReplicas,
	}
	logs, events := base, base
	logs.Name = StreamRunLogs
	logs.Description = "Output of every run, for followers that join late"
	logs.Subjects = []string{AllRunLogStores}
	events.Name = StreamRunEvents
	events.Description = "State changes of every run"
	events.Subjects = []string{AllRunEvents}
	events.NoAck = true
	return []jetstream.StreamConfig{logs, events}
}

// EnsureStreams creates the streams, or updates them to the configured
// limits and subjects, so it is safe to call at every start and from every
// replica. An update keeps what a stream holds: RUN_LOGS of an older version,
// which captured RunLogs, keeps those messages until they age out.
// Errors: Unavailable when JetStream does not answer, Internal when it
// refuses the configuration.
func (b *Bus) EnsureStreams(ctx context.Context) error {
	for _, cfg := range b.streams() {
		if _, err := b.js.CreateOrUpdateStream(ctx, cfg); err != nil {
			msg := fmt.Sprintf("cannot set up JetStream stream %s", cfg.Name)
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
				errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
				errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrConnectionClosed) {
				return &cove.Error{Code: cove.Unavailable, Message: msg, Err: err}
			}
			return cove.Wrap(err, msg)
		}
	}
	return nil
}
