package app_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/config"
	"github.com/covecompute/cove/samples/samplestest"
)

// TestComputeOnExternalNATS runs a computation end to end with the control
// plane managing the account of a separately started nats-server: the node
// and its agent connect there with the credentials the control plane signs.
func TestComputeOnExternalNATS(t *testing.T) {
	wordcount := readFile(t, samplestest.MustBuildWasm(t, "wordcount"))
	e := apptest.Engines()[0]
	c := startCluster(t, e, func(cfg *config.Config) { apptest.UseExternalNATS(t, cfg) })
	if c.m.Bus.Embedded() || c.m.Bus.ClientURL() != c.cfg.NATS.URL {
		t.Fatalf("the control plane runs on %s (embedded %v), want the external %s", c.m.Bus.ClientURL(), c.m.Bus.Embedded(), c.cfg.NATS.URL)
	}
	_, n := c.startNode(t, "on-external-nats")
	l := newLab(t, c.admin)
	alg := l.algorithm(t, "wordcount", wordcount)

	_, run := l.run(t, alg, computation.Limits{MaxDurationSeconds: 120})
	end := waitEnd(t, c.admin, run.ID, 2*time.Minute)
	if end.State != computation.Succeeded || end.NodeID != n.ID {
		t.Fatalf("run ended %s %s %s on %q, want succeeded on %s", end.State, end.Reason, end.Message, end.NodeID, n.ID)
	}
	var counts struct {
		Words int `json:"words"`
	}
	out := openResult(t, c.admin, end, l.key)
	if err := json.Unmarshal(readFile(t, filepath.Join(out, "wordcount.json")), &counts); err != nil || counts.Words != 9 {
		t.Errorf("wordcount.json: %+v %v, want 9 words", counts, err)
	}
	if len(readLogs(t, c.admin, run.ID)) == 0 {
		t.Error("no log lines came through the external NATS")
	}
	if lines := finalLogLines(t, c.m.Bus, run.ID); lines < 0 {
		t.Error("no final event in the external server's RUN_EVENTS")
	}
	if err := c.m.Bus.Ready(context.Background()); err != nil {
		t.Errorf("Ready: %v", err)
	}
}
