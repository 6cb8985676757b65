package app

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"time"

	"github.com/covecompute/cove/dispatch"
)

// startDispatch starts the control plane's side of the run protocol and
// plugs it into the scheduler (which places runs through it), the
// computation service (which stops runs and reads logs through it). It
// starts last: by then every service it calls exists.
func (m *Main) startDispatch(ctx context.Context) error {
	// Attestation nonces are derived from a key every replica shares, so an
	// agent may fetch its manifest from one replica and attest to another,
	// or across a restart. The token signing key is already shared that way.
	mac := hmac.New(sha256.New, m.signingKeyBytes)
	mac.Write([]byte("cove dispatch nonce key"))
	m.Dispatch = dispatch.New(dispatch.Config{
		Bus: m.Bus, Runs: m.Computations, Blobs: m.Blobs, Nodes: m.Nodes, Scheduler: m.Scheduler,
		Log: m.Log, NonceKey: mac.Sum(nil), // dispatch adds component=dispatch itself
	})
	// Start only sets up subscriptions and the event consumer; bound it so a
	// NATS that does not answer fails the start instead of hanging it.
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := m.Dispatch.Start(startCtx); err != nil {
		return err
	}
	m.Computations.Stopper = m.Dispatch
	m.RunLogs = m.Dispatch
	m.Scheduler.SetDispatcher(m.Dispatch)
	return nil
}
