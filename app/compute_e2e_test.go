package app_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/app/apptest"
	"github.com/covecompute/cove/catalog"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/config"
	"github.com/covecompute/cove/natsbus"
	"github.com/covecompute/cove/node"
	"github.com/covecompute/cove/runproto"
	"github.com/covecompute/cove/samples"
	"github.com/covecompute/cove/samples/samplestest"
	"github.com/covecompute/cove/sdk"
	"github.com/covecompute/cove/workspace"
)

// TestComputeToDataEndToEnd runs csvstats over a dataset of another
// workspace on a real node process, from upload to decrypted result, and
// checks who may see and do what on the way.
func TestComputeToDataEndToEnd(t *testing.T) {
	csvstats := readFile(t, samplestest.MustBuildWasm(t, "csvstats"))
	wordcount := readFile(t, samplestest.MustBuildWasm(t, "wordcount"))
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			ctx := context.Background()
			c := startCluster(t, e, nil)
			c.startNode(t, "node-1")
			url := c.m.URL

			owner := newUser(t, url, "olga@hospital.example")    // data owner, workspace A
			prov := newUser(t, url, "pete@research.example")     // algorithm provider, workspace B
			cons := newUser(t, url, "cora@research.example")     // consumer, member of B
			member := newUser(t, url, "bea@research.example")    // member of B, not a consumer
			outsider := newUser(t, url, "eve@elsewhere.example") // workspace C
			wsA, err := owner.CreateWorkspace(ctx, "hospital")
			if err != nil {
				t.Fatal(err)
			}
			wsB, err := prov.CreateWorkspace(ctx, "research")
			if err != nil {
				t.Fatal(err)
			}
			wsC, err := outsider.CreateWorkspace(ctx, "elsewhere")
			if err != nil {
				t.Fatal(err)
			}
			join(t, prov, cons, wsB.ID, workspace.Member)
			join(t, prov, member, wsB.ID, workspace.Member)

			// The provider uploads two algorithms to B; the owner shares a
			// dataset with B whose policy allows only csvstats.
			stats, err := prov.UploadAlgorithm(ctx, wsB.ID, catalog.AlgorithmUpload{Name: "csvstats", Kind: catalog.KindWasm, FileName: "csvstats.wasm"},
				bytes.NewReader(csvstats), int64(len(csvstats)), nil)
			if err != nil {
				t.Fatalf("upload csvstats: %v", err)
			}
			wc, err := prov.UploadAlgorithm(ctx, wsB.ID, catalog.AlgorithmUpload{Name: "wordcount", Kind: catalog.KindWasm, FileName: "wordcount.wasm"},
				bytes.NewReader(wordcount), int64(len(wordcount)), nil)
			if err != nil {
				t.Fatalf("upload wordcount: %v", err)
			}
			ds, err := owner.UploadDataset(ctx, wsA.ID, catalog.DatasetUpload{
				Name: "people", FileName: "people.csv", Format: catalog.FormatFile,
				Visibility: catalog.Restricted, SharedWith: []string{wsB.ID},
			}, bytes.NewReader(samples.PeopleCSV), int64(len(samples.PeopleCSV)), nil)
			if err != nil {
				t.Fatalf("upload the dataset: %v", err)
			}
			if _, err := owner.SetDatasetPolicy(ctx, ds.ID, catalog.Policy{AllowedAlgorithms: []string{stats.SHA256}}); err != nil {
				t.Fatalf("set the policy: %v", err)
			}
			if got, err := cons.GetDataset(ctx, ds.ID); err != nil || got.SHA256 != ds.SHA256 {
				t.Fatalf("the consumer cannot see the shared dataset: %+v %v", got, err)
			}

			// The consumer assembles the computation, with itself as result
			// consumer, dry-runs and runs it.
			key, err := age.GenerateX25519Identity()
			if err != nil {
				t.Fatal(err)
			}
			spec := func(alg *catalog.Algorithm) computation.Spec {
				return computation.Spec{
					AlgorithmID:     alg.ID,
					Datasets:        []computation.DatasetRef{{Name: "people", DatasetID: ds.ID}},
					ResultConsumers: []computation.ResultConsumer{{UserID: cons.ID, Recipient: key.Recipient().String()}},
					Limits:          computation.Limits{MemoryBytes: 256 << 20, MaxDurationSeconds: 120},
				}
			}
			cmp, err := cons.CreateComputation(ctx, wsB.ID, spec(stats))
			if err != nil {
				t.Fatalf("create the computation: %v", err)
			}
			dry, err := cons.DryRun(ctx, cmp.ID)
			if err != nil || !dry.Runnable || len(dry.Blockers) != 0 || dry.ManifestSHA256 != cmp.ManifestSHA256 {
				t.Fatalf("dry run: %+v %v", dry, err)
			}
			run, err := cons.StartRun(ctx, cmp.ID)
			if err != nil {
				t.Fatalf("start the run: %v", err)
			}

			// Follow the log live over server-sent events.
			type followed struct {
				end *computation.Run
				err error
			}
			lines := make(chan runproto.LogLine, 1024)
			done := make(chan followed, 1)
			followCtx, cancelFollow := context.WithTimeout(ctx, 2*time.Minute)
			defer cancelFollow()
			go func() {
				end, err := cons.Logs(followCtx, run.ID, sdk.LogOptions{Follow: true}, func(l runproto.LogLine) error {
					lines <- l
					return nil
				})
				close(lines)
				done <- followed{end, err}
			}()
			var got []runproto.LogLine
			for l := range lines {
				got = append(got, l)
			}
			f := <-done
			if f.err != nil || f.end == nil {
				t.Fatalf("follow the log: %+v %v", f.end, f.err)
			}
			if f.end.State != computation.Succeeded {
				t.Fatalf("run ended %s %s: %s; log %v", f.end.State, f.end.Reason, f.end.Message, got)
			}
			summary := slices.IndexFunc(got, func(l runproto.LogLine) bool {
				return l.Stream == "stdout" && strings.Contains(l.Text, "csvstats: people/people.csv: 200 rows, 3 numeric columns")
			})
			if summary < 0 || !slices.ContainsFunc(got, func(l runproto.LogLine) bool {
				return strings.Contains(l.Text, "age") && strings.Contains(l.Text, "count=200")
			}) {
				t.Errorf("the log lacks csvstats' summary: %+v", got)
			}
			for i, l := range got {
				if l.Seq != int64(i+1) {
					t.Fatalf("log line %d has seq %d: %+v", i, l.Seq, got)
				}
			}
			if n := finalLogLines(t, c.m.Bus, run.ID); n != int64(len(got)) {
				t.Errorf("followed %d lines, the agent reported %d", len(got), n)
			}

			// The run went through every state once, in order.
			run, err = cons.GetRun(ctx, run.ID)
			if err != nil || run.State != computation.Succeeded || run.ResultSHA256 == "" || run.StartedAt == nil || run.FinishedAt == nil {
				t.Fatalf("run %+v %v", run, err)
			}
			events, err := cons.RunEvents(ctx, run.ID)
			if err != nil {
				t.Fatal(err)
			}
			var states []computation.State
			for _, ev := range events {
				states = append(states, ev.State)
			}
			if want := []computation.State{computation.Queued, computation.Scheduled, computation.Provisioning, computation.Attesting,
				computation.Receiving, computation.Running, computation.Publishing, computation.Succeeded}; !slices.Equal(states, want) {
				t.Errorf("events %v, want %v", states, want)
			}

			// The sealed result opens with the consumer's key only.
			dir := openResult(t, cons, run, key)
			var report struct {
				Files []struct {
					Path    string `json:"path"`
					Rows    int64  `json:"rows"`
					Columns []struct {
						Name  string `json:"name"`
						Count int64  `json:"count"`
					} `json:"columns"`
				} `json:"files"`
			}
			b, err := os.ReadFile(filepath.Join(dir, "stats.json"))
			if err != nil {
				t.Fatalf("the result lacks stats.json: %v", err)
			}
			if err := json.Unmarshal(b, &report); err != nil {
				t.Fatalf("stats.json: %v: %s", err, b)
			}
			if len(report.Files) != 1 || report.Files[0].Path != "people/people.csv" || report.Files[0].Rows != 200 || len(report.Files[0].Columns) != 3 {
				t.Errorf("stats.json: %s", b)
			}
			other, _ := age.GenerateX25519Identity()
			if res, err := cons.OpenResult(ctx, run.ID); err == nil {
				if _, err := age.Decrypt(res.Body, other); err == nil {
					t.Error("a key that is not a result consumer's decrypts the result")
				}
				res.Body.Close()
			}

			// The run ran exactly the manifest everyone sees.
			raw, sum, err := cons.ComputationManifest(ctx, cmp.ID)
			if err != nil {
				t.Fatalf("manifest: %v", err)
			}
			h := sha256.Sum256(raw)
			if hex.EncodeToString(h[:]) != run.ManifestSHA256 || sum != run.ManifestSHA256 || cmp.ManifestSHA256 != run.ManifestSHA256 {
				t.Errorf("run manifest %s, computation %s, served bytes hash to %s", run.ManifestSHA256, cmp.ManifestSHA256, hex.EncodeToString(h[:]))
			}
			var m computation.Manifest
			if err := json.Unmarshal(raw, &m); err != nil || m.Algorithm.SHA256 != stats.SHA256 || len(m.Datasets) != 1 || m.Datasets[0].SHA256 != ds.SHA256 {
				t.Errorf("manifest %s: %v", raw, err)
			}
			// The dataset's provider sees the same digest.
			if _, psum, err := owner.ComputationManifest(ctx, cmp.ID); err != nil || psum != run.ManifestSHA256 {
				t.Errorf("the data owner's manifest: %s %v", psum, err)
			}

			// The other algorithm is refused by the dataset's policy.
			cmp2, err := cons.CreateComputation(ctx, wsB.ID, spec(wc))
			if err != nil {
				t.Fatalf("create the wordcount computation: %v", err)
			}
			dry, err = cons.DryRun(ctx, cmp2.ID)
			if err != nil || dry.Runnable || !slices.ContainsFunc(dry.Blockers, func(b computation.Blocker) bool {
				return b.Kind == computation.BlockPolicy && b.DatasetID == ds.ID
			}) {
				t.Errorf("dry run of wordcount: %+v %v", dry, err)
			}
			_, err = cons.StartRun(ctx, cmp2.ID)
			wantErr(t, "run wordcount", err, cove.Forbidden)
			if !slices.ContainsFunc(cove.ErrorDetails(err), func(d cove.Detail) bool { return d.Field == computation.BlockPolicy }) {
				t.Errorf("the refusal does not name the policy: %+v", cove.ErrorDetails(err))
			}
			if runs, _, err := cons.ListRuns(ctx, cmp2.ID, sdk.ListOptions{}); err != nil || len(runs) != 0 {
				t.Errorf("the refused computation has runs: %v %v", runs, err)
			}

			// A member of B who is no result consumer may see the run, not
			// its result; neither may B's owner nor the data owner.
			if _, err := member.GetRun(ctx, run.ID); err != nil {
				t.Errorf("a member of B cannot see the run: %v", err)
			}
			for who, u := range map[string]*user{"member of B": member, "owner of B": prov, "data owner": owner} {
				_, err := u.OpenResult(ctx, run.ID)
				wantErr(t, who+" opens the result", err, cove.Forbidden)
			}

			// Workspace C sees none of it.
			_, err = outsider.GetDataset(ctx, ds.ID)
			wantErr(t, "C gets the dataset", err, cove.NotFound)
			for _, a := range []string{stats.ID, wc.ID} {
				_, err = outsider.GetAlgorithm(ctx, a)
				wantErr(t, "C gets an algorithm", err, cove.NotFound)
			}
			for _, id := range []string{cmp.ID, cmp2.ID} {
				_, err = outsider.GetComputation(ctx, id)
				wantErr(t, "C gets a computation", err, cove.NotFound)
				_, _, err = outsider.ComputationManifest(ctx, id)
				wantErr(t, "C gets a manifest", err, cove.NotFound)
				_, err = outsider.DryRun(ctx, id)
				wantErr(t, "C dry-runs", err, cove.NotFound)
				_, err = outsider.StartRun(ctx, id)
				wantErr(t, "C runs", err, cove.NotFound)
				_, _, err = outsider.ListRuns(ctx, id, sdk.ListOptions{})
				wantErr(t, "C lists runs", err, cove.NotFound)
			}
			_, err = outsider.GetRun(ctx, run.ID)
			wantErr(t, "C gets the run", err, cove.NotFound)
			_, err = outsider.RunEvents(ctx, run.ID)
			wantErr(t, "C gets the events", err, cove.NotFound)
			_, err = outsider.Logs(ctx, run.ID, sdk.LogOptions{}, func(runproto.LogLine) error {
				t.Error("C reads a log line")
				return nil
			})
			wantErr(t, "C reads the logs", err, cove.NotFound)
			_, err = outsider.OpenResult(ctx, run.ID)
			wantErr(t, "C opens the result", err, cove.NotFound)
			_, err = outsider.StopRun(ctx, run.ID)
			wantErr(t, "C stops the run", err, cove.NotFound)
			dss, _, err := outsider.ListDatasets(ctx, catalog.Filter{}, sdk.ListOptions{})
			if err != nil || slices.ContainsFunc(dss, func(d *catalog.Dataset) bool { return d.ID == ds.ID }) {
				t.Errorf("C lists datasets: %v %v", dss, err)
			}
			algs, _, err := outsider.ListAlgorithms(ctx, catalog.Filter{}, sdk.ListOptions{})
			if err != nil || len(algs) != 0 {
				t.Errorf("C lists algorithms: %v %v", algs, err)
			}
			cmps, _, err := outsider.ListComputations(ctx, "", sdk.ListOptions{})
			if err != nil || len(cmps) != 0 {
				t.Errorf("C lists computations: %v %v", cmps, err)
			}
			// Asking for B's list by ID reveals nothing either.
			if cmps, _, err := outsider.ListComputations(ctx, wsB.ID, sdk.ListOptions{}); err != nil && cove.ErrorCode(err) != cove.NotFound || len(cmps) != 0 {
				t.Errorf("C lists B's computations: %v %v", cmps, err)
			}
			if cmps, _, err := outsider.ListComputations(ctx, wsC.ID, sdk.ListOptions{}); err != nil || len(cmps) != 0 {
				t.Errorf("C lists its own computations: %v %v", cmps, err)
			}
			// B's members do list them.
			if cmps, _, err := member.ListComputations(ctx, wsB.ID, sdk.ListOptions{}); err != nil || len(cmps) != 2 {
				t.Errorf("a member of B lists %d computations: %v", len(cmps), err)
			}
		})
	}
}

// TestNodeKilledMidRun kills the node process under a running run: the
// run fails with node_lost soon after, and the node, started again on its
// data dir, comes back without the run and takes new ones.
func TestNodeKilledMidRun(t *testing.T) {
	probe := readFile(t, samplestest.MustBuildWasm(t, "probe"))
	// Nodes heartbeat every second here (apptest.Config): lost_after must
	// be at least two heartbeats, or live nodes are lost between them.
	const lostAfter = 3 * time.Second
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			ctx := context.Background()
			c := startCluster(t, e, func(cfg *config.Config) { cfg.Node.LostAfter = lostAfter })
			p, n := c.startNode(t, "doomed")
			l := newLab(t, c.admin)
			alg := l.algorithm(t, "probe", probe)

			_, run := l.run(t, alg, computation.Limits{MaxDurationSeconds: 600}, "sleep", "10m")
			running := waitRun(t, c.admin, run.ID, time.Minute, "to run", func(r *computation.Run) bool {
				if r.State.Terminal() {
					t.Fatalf("run ended %s %s: %s", r.State, r.Reason, r.Message)
				}
				return r.State == computation.Running
			})
			if running.NodeID != n.ID {
				t.Fatalf("run on %q, want %s", running.NodeID, n.ID)
			}
			if got, err := c.admin.GetNode(ctx, n.ID); err != nil || got.Runs != 1 || got.Reserved.CPUs != 1 {
				t.Errorf("node while running: %+v %v", got, err)
			}

			killed := time.Now()
			p.kill()
			failed := waitEnd(t, c.admin, run.ID, lostAfter+30*time.Second)
			took := time.Since(killed)
			if failed.State != computation.Failed || failed.Reason != computation.NodeLost {
				t.Fatalf("run ended %s %s: %s, want failed node_lost", failed.State, failed.Reason, failed.Message)
			}
			if took > lostAfter+5*time.Second {
				t.Errorf("the run failed %v after the node was killed; lost_after is %v", took, lostAfter)
			}
			t.Logf("node_lost %v after SIGKILL (lost_after %v): %s", took.Round(time.Millisecond), lostAfter, failed.Message)
			if got, err := c.admin.GetNode(ctx, n.ID); err != nil || got.State != node.Lost || got.Online || got.Runs != 0 {
				t.Errorf("node after the kill: %+v %v", got, err)
			}

			// Start it again on the same data dir, without a token: it
			// comes back with no sandbox for the failed run.
			beats, err := c.m.Bus.Conn().SubscribeSync(natsbus.NodeHeartbeat(n.ID))
			if err != nil {
				t.Fatal(err)
			}
			defer beats.Unsubscribe()
			p2 := startNodeProc(t, p.dir, p.name, nil)
			msg, err := beats.NextMsg(time.Minute)
			if err != nil {
				t.Fatalf("no heartbeat from the restarted node: %v\n%s", err, p2.out.String())
			}
			var hb runproto.Heartbeat
			if err := json.Unmarshal(msg.Data, &hb); err != nil || hb.NodeID != n.ID || len(hb.Running) != 0 {
				t.Errorf("first heartbeat after the restart: %+v %v", hb, err)
			}
			back := waitNode(t, c.admin, p2, "back", func(x *node.Node) bool { return x.Online && x.State == node.Active })
			if back.ID != n.ID || back.Runs != 0 || back.Reserved != (runproto.Resources{}) {
				t.Errorf("node after the restart: %+v", back)
			}
			if entries, err := os.ReadDir(filepath.Join(p.dir, "runs")); err != nil || len(entries) != 0 {
				t.Errorf("work directories after the restart: %v %v", entries, err)
			}
			if r, err := c.admin.GetRun(ctx, run.ID); err != nil || r.State != computation.Failed || r.Reason != computation.NodeLost {
				t.Errorf("the failed run after the restart: %+v %v", r, err)
			}

			// Its capacity is free again: a new run goes there and succeeds.
			_, run2 := l.run(t, alg, computation.Limits{MaxDurationSeconds: 120}, "exit", "0")
			end := waitEnd(t, c.admin, run2.ID, time.Minute)
			if end.State != computation.Succeeded || end.NodeID != n.ID {
				t.Errorf("new run: %s %s %s on %s", end.State, end.Reason, end.Message, end.NodeID)
			}
			if got, err := c.admin.GetNode(ctx, n.ID); err != nil || got.Runs != 0 || got.Reserved != (runproto.Resources{}) {
				t.Errorf("node at the end: %+v %v", got, err)
			}
			// Heartbeats never named the failed run again.
			for {
				msg, err := beats.NextMsg(0)
				if err != nil {
					break
				}
				var hb runproto.Heartbeat
				if json.Unmarshal(msg.Data, &hb) == nil && slices.Contains(hb.Running, run.ID) {
					t.Errorf("a heartbeat names the failed run: %+v", hb)
				}
			}
		})
	}
}

// TestControlPlaneRestartMidRun restarts the control plane while a run
// logs: the run still reaches an end, and every log line that reached
// JetStream before the restart is still there after it.
func TestControlPlaneRestartMidRun(t *testing.T) {
	module := tickerWasm(t)
	const ticks = 50
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			ctx := context.Background()
			// The node reconnects to the NATS URL it enrolled with, so the
			// restarted control plane must listen on the same ports.
			natsPort, httpPort := freePort(t), freePort(t)
			c := startCluster(t, e, func(cfg *config.Config) {
				cfg.NATS.Port = natsPort
				cfg.HTTP.Addr = "127.0.0.1:" + strconv.Itoa(httpPort)
			})
			p, n := c.startNode(t, "steady")
			l := newLab(t, c.admin)
			alg := l.algorithm(t, "ticker", module)
			_, run := l.run(t, alg, computation.Limits{MaxDurationSeconds: 120}, strconv.Itoa(ticks), "100ms")

			var before []runproto.LogLine
			waitFor(t, time.Minute, "the first lines", func() (bool, error) {
				before = readLogs(t, c.admin, run.ID)
				return len(before) >= 5, nil
			})
			restarted := time.Now()
			c.restart(t)
			t.Logf("control plane restarted in %v", time.Since(restarted).Round(time.Millisecond))

			end := waitEnd(t, c.admin, run.ID, 90*time.Second)
			t.Logf("run ended %s %s %q %v after the restart", end.State, end.Reason, end.Message, time.Since(restarted).Round(time.Millisecond))
			after := readLogs(t, c.admin, run.ID)
			if len(after) < len(before) || !slices.Equal(after[:len(before)], before) {
				t.Errorf("lines before the restart %v, after %v", before, after)
			}
			for i, l := range after {
				if l.Seq != int64(i+1) || l.Text != "tick "+strconv.Itoa(i+1) {
					t.Errorf("line %d: %+v", i+1, l)
					break
				}
			}
			switch end.State {
			case computation.Succeeded:
				// A batch the agent publishes while the embedded NATS server
				// shuts down is lost: nats-server's Shutdown stops JetStream
				// before it closes client connections, and natsbus.Bus.Close
				// does not disconnect them first. -race widens that window
				// enough to catch it most times.
				if n := finalLogLines(t, c.m.Bus, run.ID); n != ticks || len(after) != ticks {
					t.Errorf("read %d lines after the restart; the agent reported %d, the ticker printed %d", len(after), n, ticks)
				}
				dir := openResult(t, c.admin, end, l.key)
				if b, err := os.ReadFile(filepath.Join(dir, "ticks.txt")); err != nil || string(b) != strconv.Itoa(ticks)+"\n" {
					t.Errorf("ticks.txt %q %v", b, err)
				}
			case computation.Failed:
				if end.Reason == "" || end.Message == "" {
					t.Errorf("the run failed without a clear reason: %+v", end)
				}
				if n := finalLogLines(t, c.m.Bus, run.ID); n > 0 && int64(len(after)) != n {
					t.Errorf("read %d lines; the agent reported %d", len(after), n)
				}
			default:
				t.Errorf("run ended %s", end.State)
			}

			// Following the ended run returns its lines and its end.
			var followed int
			last, err := c.admin.Logs(ctx, run.ID, sdk.LogOptions{Follow: true}, func(runproto.LogLine) error {
				followed++
				return nil
			})
			if err != nil || last == nil || last.State != end.State || followed != len(after) {
				t.Errorf("follow after the end: %d lines, %+v %v", followed, last, err)
			}

			// The node is still there and takes runs.
			back := waitNode(t, c.admin, p, "online", func(x *node.Node) bool { return x.Online && x.State == node.Active && x.Runs == 0 })
			if back.ID != n.ID {
				t.Errorf("node %s, want %s", back.ID, n.ID)
			}
			_, run2 := l.run(t, alg, computation.Limits{MaxDurationSeconds: 60}, "2", "1ms")
			if r := waitEnd(t, c.admin, run2.ID, time.Minute); r.State != computation.Succeeded {
				t.Errorf("run after the restart: %s %s %s", r.State, r.Reason, r.Message)
			}
		})
	}
}

// TestControlPlaneCloseWithLogFollower restarts the control plane while a
// client follows a run's log, as `cove computation logs --follow` does.
// Close should end the stream at once instead of waiting out its 10 s
// grace for a request that never ends, and the follower should resume on
// the restarted control plane without a gap.
func TestControlPlaneCloseWithLogFollower(t *testing.T) {
	module := tickerWasm(t)
	for _, e := range apptest.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			ctx := context.Background()
			natsPort, httpPort := freePort(t), freePort(t)
			c := startCluster(t, e, func(cfg *config.Config) {
				cfg.NATS.Port = natsPort
				cfg.HTTP.Addr = "127.0.0.1:" + strconv.Itoa(httpPort)
			})
			c.startNode(t, "steady")
			l := newLab(t, c.admin)
			alg := l.algorithm(t, "ticker", module)
			_, run := l.run(t, alg, computation.Limits{MaxDurationSeconds: 300}, "3000", "100ms")

			type followed struct {
				end *computation.Run
				err error
			}
			seqs := make(chan int64, 4096)
			done := make(chan followed, 1)
			followCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			go func() {
				end, err := c.admin.Logs(followCtx, run.ID, sdk.LogOptions{Follow: true}, func(l runproto.LogLine) error {
					seqs <- l.Seq
					return nil
				})
				close(seqs)
				done <- followed{end, err}
			}()
			var got []int64
			for s := range seqs {
				if got = append(got, s); len(got) == 5 {
					break
				}
			}

			closing := time.Now()
			err := c.m.Close()
			took := time.Since(closing)
			if err != nil || took > 5*time.Second {
				t.Errorf("Close with a log follower connected took %v: %v", took.Round(time.Millisecond), err)
			}
			c.m = apptest.Start(t, c.cfg)

			// Let the follower get a few lines from the new control plane,
			// then stop the run so that its stream ends.
			for s := range seqs {
				if got = append(got, s); len(got) == 15 {
					break
				}
			}
			if _, err := c.admin.StopRun(ctx, run.ID); err != nil {
				t.Errorf("stop the run: %v", err)
			}
			for s := range seqs {
				got = append(got, s)
			}
			f := <-done
			if f.err != nil || f.end == nil || f.end.State != computation.Stopped {
				t.Errorf("the follower ended with %+v, %v; want the stopped run", f.end, f.err)
			}
			for i, s := range got {
				if s != int64(i+1) {
					t.Errorf("the follower got lines %v: a gap or a repeat at %d", got, i)
					break
				}
			}
		})
	}
}
