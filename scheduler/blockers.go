package scheduler

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/covecompute/cove"
)

// Blockers says why r could not be placed even on idle nodes, one sentence
// per reason, such as "no approved node has the wasm driver"; nil means
// some node could take it once it has room. Dry runs show it; it counts
// only nodes that are up (approved, not draining, alive).
func (s *Scheduler) Blockers(r Request) []string {
	need, err := r.validate()
	if err != nil {
		return []string{strings.TrimPrefix(cove.ErrorMessage(err), "the run cannot be scheduled: ")}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blockers(&r, need)
}

// blockers narrows the nodes that may serve r one requirement at a time.
// A requirement that no remaining node meets is reported and then set
// aside, so that one answer names every requirement that cannot be met.
func (s *Scheduler) blockers(r *Request, need amount) []string {
	var nodes []*nodeState
	s.candidates(r, func(c *class) { nodes = append(nodes, c.heap...) })
	if len(nodes) == 0 {
		return []string{"no approved node is online for this workspace"}
	}
	var out []string
	narrow := func(keep func(*nodeState) bool, blocker func() string) {
		var next []*nodeState
		for _, n := range nodes {
			if keep(n) {
				next = append(next, n)
			}
		}
		if len(next) == 0 {
			out = append(out, blocker())
			return
		}
		nodes = next
	}
	narrow(func(n *nodeState) bool { return slices.Contains(n.class.drivers, r.Driver) },
		func() string { return "no approved node has the " + r.Driver + " driver" })
	narrow(func(n *nodeState) bool { return teeMatches(r.TEE, n.class.tee) },
		func() string {
			if r.TEE == TEEAny {
				return "no node offers a TEE"
			}
			return "no node offers TEE " + r.TEE
		})
	if len(r.Labels) > 0 {
		narrow(func(n *nodeState) bool { return labelsMatch(r.Labels, n.class.labels) },
			func() string {
				var ls []string
				for _, k := range slices.Sorted(maps.Keys(r.Labels)) {
					ls = append(ls, k+"="+r.Labels[k])
				}
				return "no node has the labels " + strings.Join(ls, ", ")
			})
	}
	narrow(func(n *nodeState) bool { return n.capacity.covers(need) && n.hasDisk(r.Resources.DiskBytes) },
		func() string {
			largest := nodes[0]
			for _, n := range nodes[1:] {
				if fit(n, need) > fit(largest, need) {
					largest = n
				}
			}
			disk := r.Resources.DiskBytes > 0
			return "no node is big enough for " + size(need, r.Resources.DiskBytes, disk) +
				": the largest has " + size(largest.capacity, largest.Capacity.DiskBytes, disk && largest.Capacity.DiskBytes > 0)
		})
	return out
}

// fit is how much of need n could hold: the smallest of its ratios.
func fit(n *nodeState, need amount) float64 {
	return min(float64(n.capacity.cpu)/float64(need.cpu), float64(n.capacity.mem)/float64(need.mem))
}

// size writes an amount as "2 CPUs and 4 GiB", with the disk when asked.
func size(a amount, disk int64, withDisk bool) string {
	cpus := strconv.FormatFloat(float64(a.cpu)/1000, 'f', -1, 64) + " CPUs"
	if a.cpu == 1000 {
		cpus = "1 CPU"
	}
	s := cpus + " and " + bytes(a.mem)
	if withDisk {
		s += " and " + bytes(disk) + " of disk"
	}
	return s
}

// bytes writes a size in GiB, or MiB below one GiB.
func bytes(n int64) string {
	const mib, gib = 1 << 20, 1 << 30
	switch {
	case n >= gib && n%gib == 0:
		return strconv.FormatInt(n/gib, 10) + " GiB"
	case n >= gib:
		return fmt.Sprintf("%.1f GiB", float64(n)/gib)
	case n%mib == 0:
		return strconv.FormatInt(n/mib, 10) + " MiB"
	default:
		return fmt.Sprintf("%.1f MiB", float64(n)/mib)
	}
}

func join(ss []string) string { return strings.Join(ss, "; ") }
