package computation

import (
	"fmt"
	"slices"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/catalog"
)

// teeRank orders TEE requirements: none, then any TEE, then one specific
// kind. Two different specific kinds cannot both be met.
func teeRank(t string) int {
	switch catalog.TEE(t) {
	case "", catalog.TEENone:
		return 0
	case catalog.TEEAny:
		return 1
	}
	return 2
}

// strictestTEE returns the requirement that meets both a and b, and false
// when none does (two different specific kinds).
func strictestTEE(a, b string) (string, bool) {
	ra, rb := teeRank(a), teeRank(b)
	switch {
	case ra == 2 && rb == 2:
		return a, a == b
	case ra >= rb:
		return normTEE(a), true
	default:
		return normTEE(b), true
	}
}

func normTEE(t string) string {
	if t == "" {
		return string(catalog.TEENone)
	}
	return t
}

// teeMeets reports whether a run held to the requirement have also meets
// the requirement need.
func teeMeets(have, need string) bool {
	switch teeRank(need) {
	case 0:
		return true
	case 1:
		return teeRank(have) >= 1
	}
	return have == need
}

// allowsAlgorithm reports whether a dataset's policy lets alg run on it:
// any algorithm, this exact code, or code from an allowed publisher.
func allowsAlgorithm(p catalog.Policy, alg *catalog.Algorithm) bool {
	return p.AllowAnyAlgorithm || slices.Contains(p.AllowedAlgorithms, alg.SHA256) || slices.Contains(p.AllowedPublishers, alg.WorkspaceID)
}

// buildManifest pins spec's parts as the catalog has them now. The
// datasets' policies shape it: the strictest TEE requirement wins and the
// shortest duration cap bounds the run's duration.
func buildManifest(id string, spec Spec, alg *catalog.Algorithm, dss []*catalog.Dataset) (*Manifest, error) {
	m := &Manifest{
		Version:       ManifestVersion,
		ComputationID: id,
		Algorithm: ManifestAlgorithm{
			ID: alg.ID, Name: alg.Name, Kind: alg.Kind, FileName: alg.FileName, SHA256: alg.SHA256, Size: alg.Size,
			Args: append(append([]string{}, alg.Args...), spec.Args...),
		},
		Datasets:        make([]ManifestDataset, len(dss)),
		ResultConsumers: append([]ResultConsumer{}, spec.ResultConsumers...),
		Limits:          spec.Limits,
		Network:         spec.Network,
		RequiredTEE:     string(catalog.TEENone),
	}
	var ps problems
	for i, ds := range dss {
		m.Datasets[i] = ManifestDataset{ID: ds.ID, Name: spec.Datasets[i].Name, Format: ds.Format, FileName: ds.FileName, SHA256: ds.SHA256, Size: ds.Size}
		tee, ok := strictestTEE(m.RequiredTEE, string(ds.Policy.RequiredTEE))
		if !ok {
			ps.add(fmt.Sprintf("datasets[%d]", i), "dataset %q requires TEE %s but another dataset requires %s; no node can be both", spec.Datasets[i].Name, ds.Policy.RequiredTEE, m.RequiredTEE)
			continue
		}
		m.RequiredTEE = tee
		if c := ds.Policy.MaxDurationSeconds; c > 0 && c < m.Limits.MaxDurationSeconds {
			m.Limits.MaxDurationSeconds = c
		}
	}
	return m, ps.err("computation")
}

// policyBlockers lists what the datasets' policies, as they are now,
// forbid in m. Policies may have changed since m was pinned. A nil alg or
// dataset, one the catalog no longer gives, is skipped.
func policyBlockers(m *Manifest, alg *catalog.Algorithm, dss []*catalog.Dataset) []Blocker {
	var bs []Blocker
	for i, ds := range dss {
		if ds == nil {
			continue
		}
		name, p := m.Datasets[i].Name, ds.Policy
		add := func(format string, args ...any) {
			bs = append(bs, Blocker{Kind: BlockPolicy, DatasetID: ds.ID, Message: fmt.Sprintf("dataset %q: ", name) + fmt.Sprintf(format, args...)})
		}
		if alg != nil && !allowsAlgorithm(p, alg) {
			add("its policy does not allow algorithm %q (sha256 %s, published by workspace %s); ask its owner to allow it", alg.Name, alg.SHA256, alg.WorkspaceID)
		}
		if m.Network && !p.AllowNetwork {
			add("its policy does not allow network access, and the computation asks for it")
		}
		if !teeMeets(m.RequiredTEE, normTEE(string(p.RequiredTEE))) {
			add("its policy requires TEE %s, and the manifest asks only for %s", p.RequiredTEE, m.RequiredTEE)
		}
		if c := p.MaxDurationSeconds; c > 0 && m.Limits.MaxDurationSeconds > c {
			add("its policy caps runs at %d s, and the manifest allows %d s", c, m.Limits.MaxDurationSeconds)
		}
	}
	return bs
}

// contentBlockers lists the parts whose content changed in the catalog
// since m pinned them: a run would fail its digest checks.
func contentBlockers(m *Manifest, alg *catalog.Algorithm, dss []*catalog.Dataset) []Blocker {
	var bs []Blocker
	if alg != nil && alg.SHA256 != m.Algorithm.SHA256 {
		bs = append(bs, Blocker{Kind: BlockCatalog, Message: fmt.Sprintf("algorithm %s changed since the manifest pinned it; create a new computation", alg.ID)})
	}
	for i, ds := range dss {
		if ds != nil && ds.SHA256 != m.Datasets[i].SHA256 {
			bs = append(bs, Blocker{Kind: BlockCatalog, DatasetID: ds.ID, Message: fmt.Sprintf("dataset %q changed since the manifest pinned it; create a new computation", m.Datasets[i].Name)})
		}
	}
	return bs
}

// approvalBlockers lists the datasets whose policy requires an approval
// that the computation's current manifest does not have.
func approvalBlockers(c *Computation, dss []*catalog.Dataset) []Blocker {
	var bs []Blocker
	for i, ds := range dss {
		if ds == nil || !ds.Policy.ApprovalRequired {
			continue
		}
		name := c.Datasets[i].Name
		var got *Approval
		for j := range c.Approvals {
			if a := &c.Approvals[j]; a.DatasetID == ds.ID && a.ManifestSHA256 == c.ManifestSHA256 {
				got = a
			}
		}
		switch {
		case got == nil:
			bs = append(bs, Blocker{Kind: BlockApproval, DatasetID: ds.ID, Message: fmt.Sprintf("dataset %q: approval pending from an admin of workspace %s", name, ds.WorkspaceID)})
		case got.Decision == Rejected:
			msg := fmt.Sprintf("dataset %q: rejected by its provider %s", name, got.UserID)
			if got.Comment != "" {
				msg += ": " + got.Comment
			}
			bs = append(bs, Blocker{Kind: BlockApproval, DatasetID: ds.ID, Message: msg})
		}
	}
	return bs
}

// consumerBlockers lists what keeps results from reaching anyone.
func consumerBlockers(m *Manifest) []Blocker {
	if len(m.ResultConsumers) == 0 {
		return []Blocker{{Kind: BlockConsumer, Message: "the computation has no result consumers; nobody could read its results"}}
	}
	var bs []Blocker
	for _, rc := range m.ResultConsumers {
		switch {
		case rc.Recipient == "":
			bs = append(bs, Blocker{Kind: BlockConsumer, UserID: rc.UserID, Message: fmt.Sprintf("result consumer %s has no age key", rc.UserID)})
		case ValidRecipient(rc.Recipient) != nil:
			bs = append(bs, Blocker{Kind: BlockConsumer, UserID: rc.UserID, Message: fmt.Sprintf("result consumer %s has an invalid age key", rc.UserID)})
		}
	}
	return bs
}

// blockedError is the error of a run that cannot start: Forbidden when a
// rule someone set stands in the way (permission, policy, approval,
// catalog access), Invalid when only the computation itself needs fixing
// or no node fits. Its details list every blocker.
func blockedError(bs []Blocker) error {
	code := cove.Invalid
	details := make([]cove.Detail, len(bs))
	for i, b := range bs {
		switch b.Kind {
		case BlockPermission, BlockPolicy, BlockApproval, BlockCatalog:
			code = cove.Forbidden
		}
		details[i] = cove.Detail{Field: b.Kind, Message: b.Message}
	}
	return cove.Errorf(code, "the computation cannot run: %d blocker(s); the first: %s", len(bs), bs[0].Message).WithDetails(details...)
}
