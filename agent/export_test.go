package agent

import "time"

// SetLogRequestTimeout sets how long the agent waits for the answer to a
// log batch until the test ends. Tests of the agent run one at a time.
func SetLogRequestTimeout(tb interface{ Cleanup(func()) }, d time.Duration) {
	old := logRequestTimeout
	logRequestTimeout = d
	tb.Cleanup(func() { logRequestTimeout = old })
}
