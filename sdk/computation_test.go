package sdk_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strconv"
	"testing"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/blob"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/computation/computationtest"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/sdk"
)

func TestComputations(t *testing.T) {
	e := computationtest.New(t, "sqlite")
	ctx := context.Background()
	owner, admin, consumer := e.User(t, "owner@x.io"), e.User(t, "admin@x.io"), e.User(t, "consumer@x.io")
	wsA, wsD := e.NewWorkspace(t, owner.Principal, "A"), e.NewWorkspace(t, admin.Principal, "D")
	alg := e.AddAlgorithm(wsA, catalog.KindBin)
	gated := e.AddDataset(wsD, catalog.Policy{AllowAnyAlgorithm: true, ApprovalRequired: true})
	oc, ac, cc := MustNew(t, e.URL, sdk.WithToken(owner.Token)), MustNew(t, e.URL, sdk.WithToken(admin.Token)), MustNew(t, e.URL, sdk.WithToken(consumer.Token))

	spec := computationtest.Spec(alg, []*catalog.Dataset{gated}, computation.ResultConsumer{UserID: consumer.UserID, Recipient: computationtest.Key(t).Recipient().String()})
	c, err := oc.CreateComputation(ctx, wsA, spec)
	if err != nil {
		t.Fatal(err)
	}
	if c.Manifest == nil || c.Manifest.Algorithm.Kind != catalog.KindBin || len(c.Datasets) != 1 {
		t.Fatalf("created %+v", c)
	}
	got, err := cc.GetComputation(ctx, c.ID)
	if err != nil || got.ManifestSHA256 != c.ManifestSHA256 {
		t.Fatalf("consumer's view: %v", err)
	}
	raw, sum, err := cc.ComputationManifest(ctx, c.ID)
	if err != nil || sum != c.ManifestSHA256 {
		t.Fatalf("manifest: %s %v", sum, err)
	}
	h := sha256.Sum256(raw)
	if hex.EncodeToString(h[:]) != c.ManifestSHA256 {
		t.Fatal("manifest bytes do not hash to the digest")
	}
	n := 0
	for x, err := range sdk.All(ctx, func(ctx context.Context, o sdk.ListOptions) ([]*computation.Computation, string, error) {
		return ac.ListComputations(ctx, "", o)
	}) {
		if err != nil || x.ID != c.ID {
			t.Fatalf("list: %v %v", x, err)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("the dataset's provider lists %d computations", n)
	}

	// Blocked: the approval is missing, and the error says so in details.
	dry, err := oc.DryRun(ctx, c.ID)
	if err != nil || dry.Runnable || len(dry.Blockers) != 1 || dry.Blockers[0].Kind != computation.BlockApproval {
		t.Fatalf("dry run: %+v %v", dry, err)
	}
	_, err = oc.StartRun(ctx, c.ID)
	wantCode(t, err, cove.Forbidden)
	if d := cove.ErrorDetails(err); len(d) != 1 || d[0].Field != computation.BlockApproval {
		t.Fatalf("details %+v", d)
	}
	if _, err := ac.Reject(ctx, c.ID, computation.Decision{Comment: "no"}); err != nil {
		t.Fatal(err)
	}
	if x, err := ac.Approve(ctx, c.ID, computation.Decision{DatasetID: gated.ID}); err != nil || x.Approvals[0].Decision != computation.Approved {
		t.Fatalf("approve: %v", err)
	}
	run, err := oc.StartRun(ctx, c.ID)
	if err != nil || run.State != computation.Queued {
		t.Fatalf("run: %+v %v", run, err)
	}
	if runs, next, err := cc.ListRuns(ctx, c.ID, sdk.ListOptions{}); err != nil || len(runs) != 1 || next != "" {
		t.Fatalf("runs: %v %v", runs, err)
	}

	// Logs: a stream that ends before the run is resumed after the last
	// line received, until the end event.
	lines := make([]runproto.LogLine, 5)
	for i := range lines {
		lines[i] = runproto.LogLine{Seq: int64(i + 1), Stream: "stdout", Text: "l" + strconv.Itoa(i+1)}
	}
	var calls []int64
	e.Logs.ReadLogsFunc = func(ctx context.Context, _ string, after int64, follow bool, fn func(runproto.LogLine) error) error {
		calls = append(calls, after)
		stop := int64(2)
		if len(calls) > 1 {
			stop = 5
		}
		for _, l := range lines {
			if l.Seq > after && l.Seq <= stop {
				if err := fn(l); err != nil {
					return err
				}
			}
		}
		if stop == 5 && follow {
			_, err := e.Service.Advance(ctx, run.ID, computation.Stopped, computation.RunUpdate{Reason: computation.StoppedByUser})
			return err
		}
		return nil
	}
	var seen []int64
	end, err := cc.Logs(ctx, run.ID, sdk.LogOptions{Follow: true}, func(l runproto.LogLine) error {
		seen = append(seen, l.Seq)
		return nil
	})
	if err != nil || end == nil || end.State != computation.Stopped {
		t.Fatalf("follow: %+v %v", end, err)
	}
	if len(seen) != 5 || seen[4] != 5 || len(calls) != 2 || calls[1] != 2 {
		t.Fatalf("saw %v over calls after %v", seen, calls)
	}
	// Without follow: the lines, no end.
	seen = nil
	end, err = cc.Logs(ctx, run.ID, sdk.LogOptions{After: 3}, func(l runproto.LogLine) error {
		seen = append(seen, l.Seq)
		return nil
	})
	if err != nil || end != nil || len(seen) != 2 {
		t.Fatalf("logs after 3: %v %v %v", seen, end, err)
	}
	// fn's error ends the read.
	stop := errors.New("enough")
	_, err = cc.Logs(ctx, run.ID, sdk.LogOptions{}, func(runproto.LogLine) error { return stop })
	if !errors.Is(err, stop) {
		t.Fatalf("fn's error: %v", err)
	}
	events, err := cc.RunEvents(ctx, run.ID)
	if err != nil || len(events) != 2 || events[1].State != computation.Stopped {
		t.Fatalf("events: %+v %v", events, err)
	}

	// Results: only for consumers, checked against their digest.
	again, err := oc.RestartRun(ctx, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	sealed := bytes.Repeat([]byte("sealed"), 100000)
	sha := e.PutResult(sealed)
	for _, st := range []computation.State{computation.Scheduled, computation.Provisioning, computation.Attesting, computation.Receiving, computation.Running, computation.Publishing} {
		if _, err := e.Service.Advance(ctx, again.ID, st, computation.RunUpdate{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.Service.Advance(ctx, again.ID, computation.Succeeded, computation.RunUpdate{ResultSHA256: sha, ResultSize: int64(len(sealed))}); err != nil {
		t.Fatal(err)
	}
	_, err = oc.OpenResult(ctx, again.ID)
	wantCode(t, err, cove.Forbidden)
	res, err := cc.OpenResult(ctx, again.ID)
	if err != nil || res.Size != int64(len(sealed)) || res.SHA256 != sha {
		t.Fatalf("open result: %+v %v", res, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || !bytes.Equal(b, sealed) {
		t.Fatalf("result: %d bytes, %v", len(b), err)
	}
	// Bytes that do not match the digest fail at the end.
	e.Results.OpenFunc = func(context.Context, string) (io.ReadCloser, int64, error) {
		bad := bytes.Clone(sealed)
		bad[len(bad)-1] ^= 1
		return io.NopCloser(bytes.NewReader(bad)), int64(len(bad)), nil
	}
	res, err = cc.OpenResult(ctx, again.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(res.Body)
	res.Body.Close()
	if !errors.Is(err, blob.ErrMismatch) {
		t.Fatalf("tampered result read: %v", err)
	}
	if _, err := oc.StopRun(ctx, again.ID); cove.ErrorCode(err) != cove.Conflict {
		t.Fatalf("stopping an ended run: %v", err)
	}
}
