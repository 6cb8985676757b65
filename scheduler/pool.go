package scheduler

import (
	"container/heap"
	"encoding/json"
	"maps"
	"math"
	"slices"

	"github.com/covecompute/cove/runproto"
)

// amount is an amount of compute in exact units: thousandths of a CPU and
// bytes. Reservations are added and subtracted millions of times; floats
// would drift until a node looked free when it was not.
type amount struct {
	cpu int64 // milli-CPUs
	mem int64 // bytes
}

func amountOf(r runproto.Resources) amount {
	return amount{cpu: int64(math.Round(r.CPUs * 1000)), mem: r.MemoryBytes}
}

func (a amount) covers(b amount) bool { return a.cpu >= b.cpu && a.mem >= b.mem }

func (a amount) resources() runproto.Resources {
	return runproto.Resources{CPUs: float64(a.cpu) / 1000, MemoryBytes: a.mem}
}

// nodeState is a node with its reservations. A node that is down keeps its
// reservations (the runs on a drained node go on) but is in no class, so
// nothing new is placed on it; it is forgotten once it is down and holds
// nothing.
type nodeState struct {
	Node
	capacity amount
	reserved amount
	whole    int // reservations of unknown size, each holding the whole node
	runs     int // reservations held
	up       bool
	class    *class
	index    int // position in class.heap
}

// free is what can still be reserved. Reserved may exceed a capacity that
// shrank under it; then nothing is free.
func (n *nodeState) free() amount {
	if n.whole > 0 {
		return amount{}
	}
	return amount{cpu: n.capacity.cpu - n.reserved.cpu, mem: n.capacity.mem - n.reserved.mem}
}

// hasDisk reports whether the node's disk can hold need; a node that
// advertises no disk size is not checked.
func (n *nodeState) hasDisk(need int64) bool {
	return n.Capacity.DiskBytes == 0 || n.Capacity.DiskBytes >= need
}

// class groups the up nodes that look the same to a request: same
// workspace, TEE, drivers and labels. A request is matched against each
// class once instead of against each node, and inside a class the node with
// the most free CPU is at the top of a heap, so placing a run on a cluster
// of thousands of similar nodes costs a few comparisons.
type class struct {
	key         string
	workspaceID string
	tee         string
	drivers     []string
	labels      map[string]string
	heap        nodeHeap
}

// classKey names the class of n: equal keys, equal classes.
func classKey(n Node) string {
	drivers := slices.Clone(n.Drivers)
	slices.Sort(drivers)
	drivers = slices.Compact(drivers)
	pairs := make([]string, 0, 2*len(n.Labels))
	for _, k := range slices.Sorted(maps.Keys(n.Labels)) {
		pairs = append(pairs, k, n.Labels[k])
	}
	b, _ := json.Marshal([]any{n.WorkspaceID, teeOf(n.TEE), drivers, pairs})
	return string(b)
}

// matches reports whether the nodes of c have what r asks for. The
// workspace is not checked here: classes are indexed by workspace.
func (c *class) matches(r *Request) bool {
	return slices.Contains(c.drivers, r.Driver) && teeMatches(r.TEE, c.tee) && labelsMatch(r.Labels, c.labels)
}

func teeOf(t string) string {
	if t == "" {
		return TEENone
	}
	return t
}

// teeMatches reports whether a node with TEE have satisfies a request for
// want: "none" takes any node, "any" any real TEE, else exactly that kind.
func teeMatches(want, have string) bool {
	switch teeOf(want) {
	case TEENone:
		return true
	case TEEAny:
		return teeOf(have) != TEENone
	default:
		return teeOf(have) == want
	}
}

func labelsMatch(want, have map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// best returns the node of c with the most free CPU that fits need and
// disk, or nil.
func (c *class) best(need amount, disk int64) *nodeState {
	if len(c.heap) == 0 || c.heap[0].free().cpu < need.cpu {
		return nil // the top has the most free CPU: nobody fits
	}
	if top := c.heap[0]; top.free().covers(need) && top.hasDisk(disk) {
		return top
	}
	// The top lacks memory or disk: look at the others. A best-first walk
	// of the heap visits nearly as many nodes when memory is short, at a
	// higher cost per node, so a plain scan it is.
	var best *nodeState
	var bestFree amount
	for _, n := range c.heap {
		f := n.free()
		if !f.covers(need) || !n.hasDisk(disk) {
			continue
		}
		if best == nil || f.cpu > bestFree.cpu || f.cpu == bestFree.cpu && (f.mem > bestFree.mem || f.mem == bestFree.mem && n.ID < best.ID) {
			best, bestFree = n, f
		}
	}
	return best
}

// before orders nodes for placement: most free CPU first, then most free
// memory, then by ID so that ties are broken the same way every time.
func before(a, b *nodeState) bool {
	fa, fb := a.free(), b.free()
	if fa.cpu != fb.cpu {
		return fa.cpu > fb.cpu
	}
	if fa.mem != fb.mem {
		return fa.mem > fb.mem
	}
	return a.ID < b.ID
}

// nodeHeap is a max-heap of nodes by free capacity (container/heap).
type nodeHeap []*nodeState

func (h nodeHeap) Len() int           { return len(h) }
func (h nodeHeap) Less(i, j int) bool { return before(h[i], h[j]) }
func (h nodeHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *nodeHeap) Push(x any) {
	n := x.(*nodeState)
	n.index = len(*h)
	*h = append(*h, n)
}
func (h *nodeHeap) Pop() any {
	old := *h
	n := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	n.index = -1
	return n
}

// addToClass puts an up node into the class of its kind, creating it.
func (s *Scheduler) addToClass(n *nodeState) {
	key := classKey(n.Node)
	c := s.classes[key]
	if c == nil {
		drivers := slices.Clone(n.Drivers)
		slices.Sort(drivers)
		c = &class{key: key, workspaceID: n.WorkspaceID, tee: teeOf(n.TEE), drivers: slices.Compact(drivers), labels: n.Labels}
		s.classes[key] = c
		s.scopes[n.WorkspaceID] = append(s.scopes[n.WorkspaceID], c)
	}
	n.class = c
	heap.Push(&c.heap, n)
}

// removeFromClass takes n out of its class, dropping the class when empty.
func (s *Scheduler) removeFromClass(n *nodeState) {
	c := n.class
	if c == nil {
		return
	}
	heap.Remove(&c.heap, n.index)
	n.class = nil
	if len(c.heap) == 0 {
		delete(s.classes, c.key)
		scope := s.scopes[c.workspaceID]
		if i := slices.Index(scope, c); i >= 0 {
			scope = slices.Delete(scope, i, i+1)
		}
		if len(scope) == 0 {
			delete(s.scopes, c.workspaceID)
		} else {
			s.scopes[c.workspaceID] = scope
		}
	}
}

// fix restores n's place in its class after its free capacity changed.
func (n *nodeState) fix() {
	if n.class != nil {
		heap.Fix(&n.class.heap, n.index)
	}
}

// candidates calls fn for every class that may serve r: the platform's and
// those of r's workspace.
func (s *Scheduler) candidates(r *Request, fn func(*class)) {
	for _, c := range s.scopes[""] {
		fn(c)
	}
	if r.WorkspaceID != "" {
		for _, c := range s.scopes[r.WorkspaceID] {
			fn(c)
		}
	}
}

// pick returns the node r should go on now, or nil when none has room.
func (s *Scheduler) pick(r *Request, need amount) *nodeState {
	var best *nodeState
	s.candidates(r, func(c *class) {
		if !c.matches(r) {
			return
		}
		if n := c.best(need, r.Resources.DiskBytes); n != nil && (best == nil || before(n, best)) {
			best = n
		}
	})
	return best
}

// feasible reports whether some up node could take r if it were idle, that
// is whether r waits for capacity rather than for a node that does not
// exist.
func (s *Scheduler) feasible(r *Request, need amount) bool {
	found := false
	s.candidates(r, func(c *class) {
		if found || !c.matches(r) {
			return
		}
		for _, n := range c.heap {
			if n.capacity.covers(need) && n.hasDisk(r.Resources.DiskBytes) {
				found = true
				return
			}
		}
	})
	return found
}
