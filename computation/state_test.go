package computation_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/computation"
	"github.com/covecompute/cove/computation/computationtest"
)

// machine starts runs of one runnable computation and drives them.
type machine struct {
	*world
	c *computation.Computation
}

func newMachine(t *testing.T, e *computationtest.Env) *machine {
	w := newWorld(t, e)
	return &machine{world: w, c: w.create(t, w.spec())}
}

// reasonFor is the reason a move to s needs.
func reasonFor(s computation.State) computation.Reason {
	switch s {
	case computation.Failed:
		return computation.Internal
	case computation.Stopped:
		return computation.StoppedByUser
	}
	return ""
}

// runIn returns a new run brought to state s along the happy path (failed
// and stopped straight from queued).
func (m *machine) runIn(t *testing.T, s computation.State) *computation.Run {
	t.Helper()
	r := m.start(t, m.c.ID)
	if s == computation.Queued {
		return r
	}
	path := []computation.State{s}
	if i := slices.Index(computation.States, s); s != computation.Failed && s != computation.Stopped {
		path = computation.States[1 : i+1]
	}
	for _, st := range path {
		var err error
		if r, err = m.Service.Advance(context.Background(), r.ID, st, computation.RunUpdate{Reason: reasonFor(st)}); err != nil {
			t.Fatalf("advance to %s: %v", st, err)
		}
	}
	return r
}

// TestTransitions moves a run along every transition the state machine
// allows, one subtest each, against a real database.
func TestTransitions(t *testing.T) {
	computationtest.ForEngines(t, func(t *testing.T, e *computationtest.Env) {
		m := newMachine(t, e)
		ctx := context.Background()
		for _, from := range computation.States {
			for _, to := range computation.States {
				if !from.CanMove(to) {
					continue
				}
				t.Run(string(from)+"->"+string(to), func(t *testing.T) {
					r := m.runIn(t, from)
					before, _ := e.Service.RunEvents(ctx, m.owner.Principal, r.ID)
					at := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
					code := 3
					u := computation.RunUpdate{Reason: reasonFor(to), Message: "why " + string(to), NodeID: "nod_a", At: at}
					if to == computation.Failed {
						u.Reason, u.ExitCode = computation.AlgorithmError, &code
					}
					got, err := e.Service.Advance(ctx, r.ID, to, u)
					if err != nil {
						t.Fatal(err)
					}
					if got.State != to || got.NodeID != "nod_a" || got.Message != u.Message || got.Reason != u.Reason {
						t.Fatalf("run after the move: %+v", got)
					}
					if stored, _ := e.Service.FindRun(ctx, r.ID); stored.State != to || stored.Message != u.Message {
						t.Fatalf("stored run: %+v", stored)
					}
					if to == computation.Failed && (got.ExitCode == nil || *got.ExitCode != 3) {
						t.Fatalf("exit code %v", got.ExitCode)
					}
					if to == computation.Running && (got.StartedAt == nil || !got.StartedAt.Equal(at)) {
						t.Fatalf("started at %v, want %v", got.StartedAt, at)
					}
					if to.Terminal() != (got.FinishedAt != nil) || to.Terminal() && !got.FinishedAt.Equal(at) {
						t.Fatalf("finished at %v", got.FinishedAt)
					}
					if to.Terminal() != slices.Contains(e.Released(), r.ID) {
						t.Fatalf("released %v: the scheduler must release exactly the runs that end", e.Released())
					}
					events, _ := e.Service.RunEvents(ctx, m.owner.Principal, r.ID)
					if len(events) != len(before)+1 {
						t.Fatalf("%d events, want %d", len(events), len(before)+1)
					}
					last := events[len(events)-1]
					if last.Seq != int64(len(events)) || last.State != to || last.Reason != u.Reason || last.Message != u.Message || !last.Time.Equal(at) {
						t.Fatalf("event %+v", last)
					}
				})
			}
		}
	})
}

// TestForbiddenTransitions tries every move the table does not allow,
// and moves with a wrong reason, and checks each changes nothing.
func TestForbiddenTransitions(t *testing.T) {
	computationtest.ForEngines(t, func(t *testing.T, e *computationtest.Env) {
		m := newMachine(t, e)
		ctx := context.Background()
		for _, from := range computation.States {
			r := m.runIn(t, from)
			before, _ := e.Service.RunEvents(ctx, m.owner.Principal, r.ID)
			for _, to := range computation.States {
				if from == to || from.CanMove(to) {
					continue
				}
				t.Run(string(from)+"->"+string(to), func(t *testing.T) {
					_, err := e.Service.Advance(ctx, r.ID, to, computation.RunUpdate{Reason: reasonFor(to), Message: "nope"})
					wantCode(t, err, cove.Conflict)
				})
			}
			if got, _ := e.Service.FindRun(ctx, r.ID); got.State != from || got.Message == "nope" {
				t.Fatalf("a refused move changed the run: %+v", got)
			}
			if after, _ := e.Service.RunEvents(ctx, m.owner.Principal, r.ID); len(after) != len(before) {
				t.Fatalf("a refused move added events")
			}
		}

		r := m.runIn(t, computation.Running)
		for _, c := range []struct {
			name string
			to   computation.State
			u    computation.RunUpdate
			code cove.Code
		}{
			{"failure without a reason", computation.Failed, computation.RunUpdate{}, cove.Invalid},
			{"stop without a reason", computation.Stopped, computation.RunUpdate{}, cove.Invalid},
			{"progress with a reason", computation.Publishing, computation.RunUpdate{Reason: computation.Timeout}, cove.Invalid},
			{"unknown reason", computation.Failed, computation.RunUpdate{Reason: "bored"}, cove.Invalid},
			{"unknown state", "paused", computation.RunUpdate{}, cove.Invalid},
			{"unknown run", computation.Failed, computation.RunUpdate{Reason: computation.Internal}, cove.NotFound},
		} {
			t.Run(c.name, func(t *testing.T) {
				id := r.ID
				if c.name == "unknown run" {
					id = cove.NewID("run")
				}
				_, err := e.Service.Advance(ctx, id, c.to, c.u)
				wantCode(t, err, c.code)
			})
		}
		if got, _ := e.Service.FindRun(ctx, r.ID); got.State != computation.Running {
			t.Fatalf("run is %s", got.State)
		}
	})
}

// TestAdvanceSameState checks that repeating a state only records the new
// fields, as a repeated report from a node or agent must.
func TestAdvanceSameState(t *testing.T) {
	computationtest.ForEngines(t, func(t *testing.T, e *computationtest.Env) {
		m := newMachine(t, e)
		ctx := context.Background()
		r := m.runIn(t, computation.Running)
		events, _ := e.Service.RunEvents(ctx, m.owner.Principal, r.ID)
		got, err := e.Service.Advance(ctx, r.ID, computation.Running, computation.RunUpdate{CPUSeconds: 2.5, At: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if got.CPUSeconds != 2.5 || got.NodeID != r.NodeID || !got.StartedAt.Equal(*r.StartedAt) {
			t.Fatalf("same-state advance: %+v", got)
		}
		if again, _ := e.Service.RunEvents(ctx, m.owner.Principal, r.ID); len(again) != len(events) {
			t.Fatal("a same-state advance added an event")
		}

		// A late report on a failed run fills in what it brings; the
		// reason and end stay unless given.
		failed, err := e.Service.Advance(ctx, r.ID, computation.Failed, computation.RunUpdate{Reason: computation.OOM, Message: "out of memory"})
		if err != nil {
			t.Fatal(err)
		}
		released := len(e.Released())
		late, err := e.Service.Advance(ctx, r.ID, computation.Failed, computation.RunUpdate{PeakMemory: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		if late.PeakMemory != 1<<30 || late.Reason != computation.OOM || late.Message != "out of memory" || !late.FinishedAt.Equal(*failed.FinishedAt) || late.CPUSeconds != 2.5 {
			t.Fatalf("late report: %+v", late)
		}
		if len(e.Released()) != released {
			t.Fatal("a repeated end released the run again")
		}
		_, err = e.Service.Advance(ctx, r.ID, computation.Stopped, computation.RunUpdate{Reason: computation.StoppedByUser})
		wantCode(t, err, cove.Conflict)
	})
}

// TestAdvanceRace ends the same run from two goroutines at once, many
// times: exactly one end wins, the other is Conflict, and the run has one
// final event. Run with -race.
func TestAdvanceRace(t *testing.T) {
	computationtest.ForEngines(t, func(t *testing.T, e *computationtest.Env) {
		m := newMachine(t, e)
		ctx := context.Background()
		for _, c := range []struct {
			from   computation.State
			a, b   computation.State
			rounds int
		}{
			{computation.Publishing, computation.Failed, computation.Succeeded, 10},
			{computation.Running, computation.Failed, computation.Stopped, 10},
		} {
			for range c.rounds {
				r := m.runIn(t, c.from)
				var (
					wg    sync.WaitGroup
					start = make(chan struct{})
					errs  = make([]error, 2)
				)
				for i, to := range []computation.State{c.a, c.b} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						_, errs[i] = e.Service.Advance(ctx, r.ID, to, computation.RunUpdate{Reason: reasonFor(to)})
					}()
				}
				close(start)
				wg.Wait()
				won := 0
				for _, err := range errs {
					switch cove.ErrorCode(err) {
					case "":
						won++
					case cove.Conflict:
					default:
						t.Fatalf("advance failed otherwise: %v", err)
					}
				}
				if won != 1 {
					t.Fatalf("%s -> %s | %s: %d winners (%v)", c.from, c.a, c.b, won, errs)
				}
				got, _ := e.Service.FindRun(ctx, r.ID)
				winner := c.a
				if errs[0] != nil {
					winner = c.b
				}
				if got.State != winner {
					t.Fatalf("run is %s, the winner was %s", got.State, winner)
				}
				events, _ := e.Service.RunEvents(ctx, m.owner.Principal, r.ID)
				ends := 0
				for _, ev := range events {
					if ev.State.Terminal() {
						ends++
					}
				}
				if ends != 1 {
					t.Fatalf("%d final events", ends)
				}
			}
		}
	})
}
