package natsbus_test

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/covecompute/cove/natsbus"
)

// The subjects are the wire protocol with nodes and agents, so their exact
// text is pinned here: changing one breaks nodes and agents already deployed.
func TestSubjects(t *testing.T) {
	t.Parallel()
	const node, run = "node_1", "run_1"
	tests := []struct {
		got, want, wildcard string
	}{
		{natsbus.NodeHeartbeat(node), "cove.node.node_1.heartbeat", natsbus.AllNodeHeartbeats},
		{natsbus.NodeEvents(node), "cove.node.node_1.events", natsbus.AllNodeEvents},
		{natsbus.NodeControl(node), "cove.node.node_1.control", ""},
		{natsbus.NodeInboxPrefix(node), "cove.node.node_1.inbox", ""},
		{natsbus.RunManifest(run), "cove.run.run_1.manifest", natsbus.AllRunManifests},
		{natsbus.RunInputs(run), "cove.run.run_1.inputs", natsbus.AllRunInputs},
		{natsbus.RunEvents(run), "cove.run.run_1.events", natsbus.AllRunEvents},
		{natsbus.RunLogs(run), "cove.run.run_1.logs", natsbus.AllRunLogs},
		{natsbus.RunHeartbeat(run), "cove.run.run_1.heartbeat", natsbus.AllRunHeartbeats},
		{natsbus.RunResults(run), "cove.run.run_1.results", natsbus.AllRunResults},
		{natsbus.RunControl(run), "cove.run.run_1.control", ""},
		{natsbus.RunInboxPrefix(run), "cove.run.run_1.inbox", ""},
		{natsbus.RunLogStore(run), "cove.logs.run_1", natsbus.AllRunLogStores},
	}
	wildcards := []string{
		natsbus.AllNodeHeartbeats, natsbus.AllNodeEvents, natsbus.AllRunManifests, natsbus.AllRunInputs,
		natsbus.AllRunEvents, natsbus.AllRunLogs, natsbus.AllRunHeartbeats, natsbus.AllRunResults,
		natsbus.AllRunLogStores,
	}
	for _, tt := range tests {
		if tt.got != tt.want || !server.IsValidLiteralSubject(tt.got) {
			t.Errorf("subject %q, want literal %q", tt.got, tt.want)
		}
		// Each subject matches its own wildcard and no other, so a control
		// plane handler never sees another verb's messages.
		for _, w := range wildcards {
			if match := server.SubjectMatchesFilter(tt.got, w); match != (w == tt.wildcard) {
				t.Errorf("%q matches %q: %v", tt.got, w, match)
			}
		}
	}
}

func TestSubjectOwner(t *testing.T) {
	t.Parallel()
	tests := []struct {
		subject, node, run string
	}{
		{natsbus.NodeHeartbeat("node_1"), "node_1", ""},
		{natsbus.NodeInboxPrefix("node_1") + ".abc.1", "node_1", ""},
		{natsbus.RunLogs("run_1"), "", "run_1"},
		{natsbus.RunLogStore("run_1"), "", ""}, // the control plane's own
		{"cove.run.run_1", "", ""},
		{"cove.run..logs", "", ""},
		{"cove.run.run_1.", "", ""},
		{"cove.node.*.heartbeat", "", ""},
		{"other.node.node_1.heartbeat", "", ""},
		{"cove.nodes.node_1.heartbeat", "", ""},
	}
	for _, tt := range tests {
		node, ok := natsbus.NodeFromSubject(tt.subject)
		if node != tt.node || ok != (tt.node != "") {
			t.Errorf("NodeFromSubject(%q) = %q, %v; want %q", tt.subject, node, ok, tt.node)
		}
		run, ok := natsbus.RunFromSubject(tt.subject)
		if run != tt.run || ok != (tt.run != "") {
			t.Errorf("RunFromSubject(%q) = %q, %v; want %q", tt.subject, run, ok, tt.run)
		}
	}
}

func TestInInbox(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		in           func(owner, subject string) bool
		owner, reply string
		want         bool
	}{
		{"run", natsbus.InRunInbox, "run_1", "cove.run.run_1.inbox.abc.1", true},
		{"run", natsbus.InRunInbox, "run_1", "cove.run.run_1.inbox", false},
		{"run", natsbus.InRunInbox, "run_1", "cove.run.run_10.inbox.abc", false},
		{"run", natsbus.InRunInbox, "run_1", "cove.run.run_2.inbox.abc", false},
		{"run", natsbus.InRunInbox, "run_1", "cove.run.run_1.control", false},
		{"run", natsbus.InRunInbox, "run_1", "cove.node.run_1.inbox.abc", false},
		{"run", natsbus.InRunInbox, "run_1", "_INBOX.abc", false},
		{"run", natsbus.InRunInbox, "run_1", "", false},
		{"run", natsbus.InRunInbox, "*", "cove.run.*.inbox.abc", false},
		{"node", natsbus.InNodeInbox, "node_1", "cove.node.node_1.inbox.abc.1", true},
		{"node", natsbus.InNodeInbox, "node_1", "cove.node.node_10.inbox.abc", false},
		{"node", natsbus.InNodeInbox, "node_1", "cove.run.node_1.inbox.abc", false},
		{"node", natsbus.InNodeInbox, "node_1", "_INBOX.abc", false},
		{"node", natsbus.InNodeInbox, "", "cove.node..inbox.abc", false},
	}
	for _, tt := range tests {
		if got := tt.in(tt.owner, tt.reply); got != tt.want {
			t.Errorf("%s inbox of %q holds %q: %v, want %v", tt.name, tt.owner, tt.reply, got, tt.want)
		}
	}
}
