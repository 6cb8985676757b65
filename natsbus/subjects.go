package natsbus

import (
	"strings"
	"unicode"

	"github.com/covecompute/cove"
)

// Every NATS subject Cove uses is built in this file, so the protocol can be
// read in one place and README.md can be checked against it. Subjects have
// the shape cove.node.<node>.<verb> and cove.run.<run>.<verb>; the second
// token names the owner, which is what credentials are scoped by. Subjects
// under cove.logs are the control plane's own: no node or agent credential
// names them.

const (
	nodeRoot     = "cove.node"
	runRoot      = "cove.run"
	logStoreRoot = "cove.logs"

	verbHeartbeat = "heartbeat"
	verbEvents    = "events"
	verbControl   = "control"
	verbManifest  = "manifest"
	verbInputs    = "inputs"
	verbLogs      = "logs"
	verbResults   = "results"
	verbInbox     = "inbox"
)

// Wildcards the control plane subscribes to, one per verb that nodes and
// agents publish. They match exactly one owner token, so a subscription on
// one of them never sees another verb.
const (
	AllNodeHeartbeats = nodeRoot + ".*." + verbHeartbeat
	AllNodeEvents     = nodeRoot + ".*." + verbEvents
	AllRunManifests   = runRoot + ".*." + verbManifest
	AllRunInputs      = runRoot + ".*." + verbInputs
	AllRunEvents      = runRoot + ".*." + verbEvents
	AllRunLogs        = runRoot + ".*." + verbLogs
	AllRunHeartbeats  = runRoot + ".*." + verbHeartbeat
	AllRunResults     = runRoot + ".*." + verbResults
)

// AllRunLogStores is what the RUN_LOGS stream captures: the log batches the
// control plane has accepted, of every run.
const AllRunLogStores = logStoreRoot + ".*"

// NodeHeartbeat is where a node reports that it is alive, with its capacity.
func NodeHeartbeat(node string) string { return nodeRoot + "." + node + "." + verbHeartbeat }

// NodeEvents is where a node reports what happened to its sandboxes.
func NodeEvents(node string) string { return nodeRoot + "." + node + "." + verbEvents }

// NodeControl is where the control plane sends a node its commands (start or
// stop a sandbox, reconcile). The node answers on the request's reply subject.
func NodeControl(node string) string { return nodeRoot + "." + node + "." + verbControl }

// NodeInboxPrefix is the inbox prefix a node passes to nats.CustomInboxPrefix.
// Its credential lets it subscribe only there, not on the default _INBOX, so
// without it the node's requests never see their replies.
func NodeInboxPrefix(node string) string { return nodeRoot + "." + node + "." + verbInbox }

// RunManifest is where an agent asks for its run's manifest.
func RunManifest(run string) string { return runRoot + "." + run + "." + verbManifest }

// RunInputs is where an agent asks for the algorithm and datasets of its run.
func RunInputs(run string) string { return runRoot + "." + run + "." + verbInputs }

// RunEvents is where an agent reports state changes; JetStream keeps them in
// the RUN_EVENTS stream.
func RunEvents(run string) string { return runRoot + "." + run + "." + verbEvents }

// RunLogs is where an agent sends the algorithm's output, each batch a
// request the control plane answers once it has stored the batch under
// RunLogStore. No stream captures it: a stream would drop what its ingest
// queue cannot hold, without telling the agent.
func RunLogs(run string) string { return runRoot + "." + run + "." + verbLogs }

// RunLogStore is where the control plane stores the log batches of run that
// it accepted on RunLogs; the RUN_LOGS stream keeps them, so followers can
// start from the beginning. Only the control plane may publish or read here.
func RunLogStore(run string) string { return logStoreRoot + "." + run }

// RunHeartbeat is where an agent reports that it is alive.
func RunHeartbeat(run string) string { return runRoot + "." + run + "." + verbHeartbeat }

// RunResults is where an agent uploads sealed results.
func RunResults(run string) string { return runRoot + "." + run + "." + verbResults }

// RunControl is where the control plane sends an agent requests such as an
// attestation challenge. The agent answers on the request's reply subject.
func RunControl(run string) string { return runRoot + "." + run + "." + verbControl }

// RunInboxPrefix is the inbox prefix an agent passes to nats.CustomInboxPrefix,
// for the same reason as NodeInboxPrefix.
func RunInboxPrefix(run string) string { return runRoot + "." + run + "." + verbInbox }

// InNodeInbox reports whether subject lies in node's inbox. Control-plane
// responders check a request's reply subject with it before answering:
// a client may name any reply subject, and the control plane may publish
// anywhere, so answering blindly would let node A write into node B's inbox.
func InNodeInbox(node, subject string) bool {
	return checkID("node", node) == nil && strings.HasPrefix(subject, NodeInboxPrefix(node)+".")
}

// InRunInbox reports whether subject lies in run's inbox; see InNodeInbox.
func InRunInbox(run, subject string) bool {
	return checkID("run", run) == nil && strings.HasPrefix(subject, RunInboxPrefix(run)+".")
}

// NodeFromSubject returns the node a cove.node.<node>.<verb> subject belongs
// to, so a handler on a wildcard such as AllNodeHeartbeats learns the sender.
// The server has already checked that only that node could publish there.
func NodeFromSubject(subject string) (string, bool) { return owner(nodeRoot, subject) }

// RunFromSubject returns the run a cove.run.<run>.<verb> subject belongs to;
// see NodeFromSubject.
func RunFromSubject(subject string) (string, bool) { return owner(runRoot, subject) }

func owner(root, subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, root+".")
	if !ok {
		return "", false
	}
	id, verb, ok := strings.Cut(rest, ".")
	if !ok || verb == "" || checkID("", id) != nil {
		return "", false
	}
	return id, true
}

// The permissions of node and agent credentials, next to the subjects they
// name so that a new verb gets its direction decided here.
//
// Publish and subscribe sets are disjoint on purpose. Credentials allow
// responses (a client may publish once to the reply subject of a message it
// received), and if a client could receive its own publications it could
// name any reply subject, deliver the message to itself and so earn a
// publish anywhere, including into another run.

func nodePublish(node string) []string {
	return []string{NodeHeartbeat(node), NodeEvents(node)}
}

func nodeSubscribe(node string) []string {
	return []string{NodeControl(node), NodeInboxPrefix(node) + ".>"}
}

func runPublish(run string) []string {
	return []string{RunManifest(run), RunInputs(run), RunEvents(run), RunLogs(run), RunHeartbeat(run), RunResults(run)}
}

func runSubscribe(run string) []string {
	return []string{RunControl(run), RunInboxPrefix(run) + ".>"}
}

// checkID rejects an ID that would change the shape of a subject: empty, or
// holding a token separator, a wildcard, whitespace or a control character.
// IDs from cove.NewID always pass.
func checkID(kind, id string) error {
	if id == "" {
		return cove.Errorf(cove.Invalid, "%s ID is empty", kind)
	}
	if strings.ContainsAny(id, ".*>") || strings.ContainsFunc(id, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}) {
		return cove.Errorf(cove.Invalid, "%s ID %q may not contain '.', '*', '>' or whitespace", kind, id)
	}
	return nil
}
