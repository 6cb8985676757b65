package catalog

import (
	"context"
	"io"
	"slices"
	"time"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/audit"
	"github.com/covecompute/cove/authz"
)

// DefaultMaxUploadBytes bounds the content of one upload when
// Service.MaxUploadBytes is 0.
const DefaultMaxUploadBytes int64 = 64 << 30

// Service is the catalog service. Methods that take a principal check it
// through the authorizer: an entry the principal may not see is not_found,
// the same answer as for one that does not exist, and forbidden is only
// for entries they can see but may not change.
//
// Visibility is written as reader relations (see authz/model.fga) beside
// the SQL rows, in the order the workspace service uses: relations that
// take rights away are removed before the SQL commit, relations that give
// rights are added after it, and SyncRelations adds them all again at
// start.
type Service struct {
	// Usage, when set, tells whether computations use an entry; one in use
	// cannot be deleted. Set it before serving.
	Usage Usage
	// MaxUploadBytes bounds the content of one upload; 0 means
	// DefaultMaxUploadBytes.
	MaxUploadBytes int64

	store Store
	blobs Blobs
	authz *authz.Authorizer
	now   func() time.Time
}

// NewService returns a catalog service; now nil means time.Now.
func NewService(store Store, blobs Blobs, az *authz.Authorizer, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{store: store, blobs: blobs, authz: az, now: func() time.Time { return now().UTC().Truncate(time.Microsecond) }}
}

// access is what datasets and algorithms share for authorization.
type access struct {
	object      string // "dataset:ds_..." or "algorithm:alg_..."
	workspaceID string
	visibility  Visibility
	shared      []string
}

func (d *Dataset) access() access {
	return access{authz.Dataset(d.ID), d.WorkspaceID, d.Visibility, d.SharedWith}
}

func (a *Algorithm) access() access {
	return access{authz.Algorithm(a.ID), a.WorkspaceID, a.Visibility, a.SharedWith}
}

// readers are the tuples of the visibility: one for every user when
// public, one per listed workspace's viewers when restricted, none when
// private.
func (e access) readers() []authz.Tuple {
	switch e.visibility {
	case Public:
		return []authz.Tuple{authz.NewTuple(authz.AllUsers, authz.Reader, e.object)}
	case Restricted:
		ts := make([]authz.Tuple, 0, len(e.shared))
		for _, ws := range e.shared {
			ts = append(ts, authz.NewTuple(authz.Userset(authz.Workspace(ws), authz.Viewer), authz.Reader, e.object))
		}
		return ts
	}
	return nil
}

// all is every tuple of the entry: its parent workspace and its readers.
func (e access) all() []authz.Tuple {
	return append(e.readers(), authz.NewTuple(authz.Workspace(e.workspaceID), authz.ParentWorkspace, e.object))
}

// minus returns the tuples of a that are not in b.
func minus(a, b []authz.Tuple) []authz.Tuple {
	var out []authz.Tuple
	for _, t := range a {
		if !slices.Contains(b, t) {
			out = append(out, t)
		}
	}
	return out
}

func (s *Service) entry(p cove.Principal, wsID, action, target, detail string) audit.Entry {
	return audit.Entry{ID: cove.NewID("aud"), Time: s.now(), ActorID: p.UserID, WorkspaceID: wsID, Action: action, Target: target, Outcome: audit.Success, Detail: detail}
}

// requireWorkspace checks relation on a workspace; one p cannot see is
// not_found.
func (s *Service) requireWorkspace(ctx context.Context, p cove.Principal, wsID, relation string) error {
	msg := "workspace " + wsID + " not found"
	if !cove.ValidID("ws", wsID) {
		return cove.Errorf(cove.NotFound, "%s", msg)
	}
	return s.authz.RequireVisible(ctx, p.Subject(), authz.CanView, relation, authz.Workspace(wsID), msg)
}

// require checks relation on an entry. A malformed ID is not_found
// before it reaches the authorizer.
func (s *Service) require(ctx context.Context, p cove.Principal, prefix, id, relation string) error {
	object, noun := authz.Dataset(id), "dataset "
	if prefix == "alg" {
		object, noun = authz.Algorithm(id), "algorithm "
	}
	if !cove.ValidID(prefix, id) {
		return cove.Errorf(cove.NotFound, "%s%s not found", noun, id)
	}
	return s.authz.RequireVisible(ctx, p.Subject(), authz.CanView, relation, object, noun+id+" not found")
}

// redact hides the workspaces an entry is shared with from whoever is not
// in its own workspace: who else may use it is its owners' business.
func (s *Service) redact(ctx context.Context, p cove.Principal, wsID string, shared *[]string) error {
	ok, err := s.authz.Check(ctx, p.Subject(), authz.CanView, authz.Workspace(wsID))
	if err != nil {
		return err
	}
	if !ok {
		*shared = []string{}
	}
	return nil
}

// checkShares refuses to share with workspaces that do not exist, so that
// a mistyped ID is not silently kept.
func (s *Service) checkShares(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	missing, err := s.store.FindMissingWorkspaces(ctx, ids)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return invalid("shared_with", "names workspace %s, which does not exist", missing[0])
	}
	return nil
}

// put streams content into the blob store through the check of a dataset
// format or an algorithm kind. Content the check refuses, content over the
// size limit and content cut off are not stored.
func (s *Service) put(ctx context.Context, content io.Reader, want, formatOrKind string) (string, int64, error) {
	chk := checkFor(formatOrKind)
	defer chk.abort()
	max := s.MaxUploadBytes
	if max <= 0 {
		max = DefaultMaxUploadBytes
	}
	return s.blobs.Put(ctx, &checkedReader{r: content, check: chk, max: max}, want)
}

// register runs insert for a new entry whose content is stored, under the
// content lock: deleting the last other entry with the same content
// removes the bytes under the same lock, so either that delete sees the
// new entry and keeps them, or register sees them gone and fails. When
// register fails, content that no entry references is removed again.
func (s *Service) register(ctx context.Context, sum string, insert func(tx Store) error) error {
	err := s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.LockContent(ctx, sum); err != nil {
			return err
		}
		rc, _, err := s.blobs.Open(ctx, sum)
		if cove.ErrorCode(err) == cove.NotFound {
			return cove.Errorf(cove.Conflict, "the content was removed while it was uploaded; upload it again")
		} else if err != nil {
			return err
		}
		rc.Close()
		return insert(tx)
	})
	if err != nil {
		// Best effort: what stays is only unreferenced bytes.
		ctx := context.WithoutCancel(ctx)
		_ = s.store.Atomic(ctx, func(tx Store) error {
			if err := tx.LockContent(ctx, sum); err != nil {
				return err
			}
			return s.dropUnreferenced(ctx, tx, sum)
		})
	}
	return err
}

// dropUnreferenced removes the content with digest sum when no entry
// references it and the blob store can delete. Call it holding the
// content lock.
func (s *Service) dropUnreferenced(ctx context.Context, tx Store, sum string) error {
	del, ok := s.blobs.(BlobDeleter)
	if !ok {
		return nil
	}
	n, err := tx.CountContentRefs(ctx, sum)
	if err != nil || n > 0 {
		return err
	}
	return del.Delete(ctx, sum)
}

// revokeIn removes tuples before a commit, returning a function that puts
// them back when the commit fails.
func (s *Service) revokeIn(ctx context.Context, ts []authz.Tuple) (undo func(), err error) {
	if err := s.authz.Write(ctx, nil, ts); err != nil {
		return nil, err
	}
	return func() { _ = s.authz.Write(context.WithoutCancel(ctx), ts, nil) }, nil
}

// CreateDataset stores a dataset's content, streamed from content, and
// registers it in workspace wsID; members may. The dataset exists only
// once its content is stored: content that is cut off, over the size
// limit, not the declared up.SHA256, or (for FormatTar) not an archive the
// sandbox can unpack leaves nothing behind.
func (s *Service) CreateDataset(ctx context.Context, p cove.Principal, wsID string, up DatasetUpload, content io.Reader) (*Dataset, error) {
	if err := s.requireWorkspace(ctx, p, wsID, authz.CanWrite); err != nil {
		return nil, err
	}
	if err := up.validate(); err != nil {
		return nil, err
	}
	if err := s.checkShares(ctx, up.SharedWith); err != nil {
		return nil, err
	}
	sum, size, err := s.put(ctx, content, up.SHA256, up.Format)
	if err != nil {
		return nil, err
	}
	now := s.now()
	d := &Dataset{
		ID: cove.NewID("ds"), WorkspaceID: wsID, Name: up.Name, Description: up.Description,
		Format: up.Format, FileName: up.FileName, SHA256: sum, Size: size,
		Visibility: up.Visibility, SharedWith: up.SharedWith, Policy: Policy{}.normalize(),
		CreatedBy: p.UserID, CreatedAt: now, UpdatedAt: now,
	}
	err = s.register(ctx, sum, func(tx Store) error {
		if err := tx.CreateDataset(ctx, d); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, wsID, "dataset.create", d.ID, "sha256 "+sum))
	})
	if err != nil {
		return nil, err
	}
	return d, s.authz.Write(ctx, d.access().all(), nil)
}

// GetDataset returns a dataset p may see.
func (s *Service) GetDataset(ctx context.Context, p cove.Principal, id string) (*Dataset, error) {
	return s.useDataset(ctx, p, id, authz.CanView)
}

// UseDataset returns a dataset p may name in a computation: not_found when
// p cannot see it, forbidden when p can see but not use it. Its policy
// still decides whether a run may go ahead.
func (s *Service) UseDataset(ctx context.Context, p cove.Principal, id string) (*Dataset, error) {
	return s.useDataset(ctx, p, id, authz.CanUse)
}

func (s *Service) useDataset(ctx context.Context, p cove.Principal, id, relation string) (*Dataset, error) {
	if err := s.require(ctx, p, "ds", id, relation); err != nil {
		return nil, err
	}
	d, err := s.store.FindDatasetByID(ctx, id)
	if err != nil {
		return nil, err
	}
	return d, s.redact(ctx, p, d.WorkspaceID, &d.SharedWith)
}

// FindDatasetByID returns a dataset without any authorization check, for
// the run path, which has checked already.
func (s *Service) FindDatasetByID(ctx context.Context, id string) (*Dataset, error) {
	return s.store.FindDatasetByID(ctx, id)
}

// ListDatasets returns the datasets p may see that match f: those of p's
// workspaces, public ones, and restricted ones shared with one of p's
// workspaces.
func (s *Service) ListDatasets(ctx context.Context, p cove.Principal, f Filter, page cove.Page) ([]*Dataset, error) {
	if err := f.validate(false); err != nil {
		return nil, err
	}
	return s.store.FindDatasets(ctx, p.UserID, f, page.Normalize())
}

// UpdateDataset changes a dataset's name, description or visibility;
// members of its workspace may.
func (s *Service) UpdateDataset(ctx context.Context, p cove.Principal, id string, upd DatasetUpdate) (*Dataset, error) {
	if err := s.require(ctx, p, "ds", id, authz.CanEdit); err != nil {
		return nil, err
	}
	if err := s.checkUpdate(ctx, upd.Name, upd.Description, upd.Visibility, upd.SharedWith); err != nil {
		return nil, err
	}
	// The row lock makes concurrent updates of one dataset apply one
	// after the other, each to what the previous one committed.
	var d *Dataset
	var grants []authz.Tuple
	var undo func()
	err := s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.LockDataset(ctx, id); err != nil {
			return err
		}
		old, err := tx.FindDatasetByID(ctx, id)
		if err != nil {
			return err
		}
		d = new(*old)
		if err := applyUpdate(&d.Name, &d.Description, &d.Visibility, &d.SharedWith, upd.Name, upd.Description, upd.Visibility, upd.SharedWith); err != nil {
			return err
		}
		d.UpdatedAt = s.now()
		oldTs, newTs := old.access().readers(), d.access().readers()
		if undo, err = s.revokeIn(ctx, minus(oldTs, newTs)); err != nil {
			return err
		}
		grants = minus(newTs, oldTs)
		if err := tx.UpdateDataset(ctx, d); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, d.WorkspaceID, "dataset.update", id, "visibility "+string(d.Visibility)))
	})
	if err != nil {
		if undo != nil {
			undo()
		}
		return nil, err
	}
	return d, s.authz.Write(ctx, grants, nil)
}

// SetDatasetPolicy replaces a dataset's compute policy; members of its
// workspace may.
func (s *Service) SetDatasetPolicy(ctx context.Context, p cove.Principal, id string, pol Policy) (*Dataset, error) {
	if err := s.require(ctx, p, "ds", id, authz.CanEdit); err != nil {
		return nil, err
	}
	if err := pol.Validate(); err != nil {
		return nil, err
	}
	pol = pol.normalize()
	var d *Dataset
	err := s.store.Atomic(ctx, func(tx Store) error {
		var err error
		if err = tx.UpdateDatasetPolicy(ctx, id, pol, s.now()); err != nil {
			return err
		}
		if d, err = tx.FindDatasetByID(ctx, id); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, d.WorkspaceID, "dataset.policy", id, ""))
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// DeleteDataset deletes a dataset; admins of its workspace may, and not
// while a computation uses it (conflict). Its content is removed too
// unless another entry has the same.
func (s *Service) DeleteDataset(ctx context.Context, p cove.Principal, id string) error {
	if err := s.require(ctx, p, "ds", id, authz.CanDelete); err != nil {
		return err
	}
	if s.Usage != nil {
		inUse, err := s.Usage.DatasetInUse(ctx, id)
		if err != nil {
			return err
		}
		if inUse {
			return cove.Errorf(cove.Conflict, "dataset %s is used by a computation; delete the computation first", id)
		}
	}
	return s.deleteEntry(ctx, p, "dataset.delete", func(tx Store) (access, string, error) {
		if err := tx.LockDataset(ctx, id); err != nil {
			return access{}, "", err
		}
		d, err := tx.FindDatasetByID(ctx, id)
		if err != nil {
			return access{}, "", err
		}
		return d.access(), d.SHA256, nil
	}, func(tx Store) error { return tx.DeleteDataset(ctx, id) })
}

// deleteEntry deletes an entry in one transaction: load locks and reads
// it, then every relation of the entry is revoked, del deletes its row,
// its content goes when nothing else references it, and the deletion is
// audited. The relations come back if any of it, or the commit, fails.
func (s *Service) deleteEntry(ctx context.Context, p cove.Principal, action string, load func(tx Store) (access, string, error), del func(tx Store) error) error {
	var undo func()
	err := s.store.Atomic(ctx, func(tx Store) error {
		e, sum, err := load(tx)
		if err != nil {
			return err
		}
		if undo, err = s.revokeIn(ctx, e.all()); err != nil {
			return err
		}
		if err := tx.LockContent(ctx, sum); err != nil {
			return err
		}
		if err := del(tx); err != nil {
			return err
		}
		// Removing the bytes before the commit keeps a concurrent upload
		// of the same content from registering an entry without them
		// (see register). Should the commit then fail, the entry stays
		// without content, and deleting it again succeeds.
		if err := s.dropUnreferenced(ctx, tx, sum); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, e.workspaceID, action, authz.ID(e.object), "sha256 "+sum))
	})
	if err != nil && undo != nil {
		undo()
	}
	return err
}

// CreateAlgorithm stores an algorithm's content, streamed from content,
// and registers it in workspace wsID; members may. The content must be
// what its kind says: a WebAssembly module for KindWasm, UTF-8 text for
// KindPython, at least one byte for KindBin; anything else is invalid and
// leaves nothing behind, as does content cut off or not the declared
// up.SHA256.
func (s *Service) CreateAlgorithm(ctx context.Context, p cove.Principal, wsID string, up AlgorithmUpload, content io.Reader) (*Algorithm, error) {
	if err := s.requireWorkspace(ctx, p, wsID, authz.CanWrite); err != nil {
		return nil, err
	}
	if err := up.validate(); err != nil {
		return nil, err
	}
	if err := s.checkShares(ctx, up.SharedWith); err != nil {
		return nil, err
	}
	sum, size, err := s.put(ctx, content, up.SHA256, up.Kind)
	if err != nil {
		return nil, err
	}
	now := s.now()
	a := &Algorithm{
		ID: cove.NewID("alg"), WorkspaceID: wsID, Name: up.Name, Description: up.Description,
		Kind: up.Kind, FileName: up.FileName, SHA256: sum, Size: size, Args: up.Args,
		Visibility: up.Visibility, SharedWith: up.SharedWith,
		CreatedBy: p.UserID, CreatedAt: now, UpdatedAt: now,
	}
	err = s.register(ctx, sum, func(tx Store) error {
		if err := tx.CreateAlgorithm(ctx, a); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, wsID, "algorithm.create", a.ID, "sha256 "+sum))
	})
	if err != nil {
		return nil, err
	}
	return a, s.authz.Write(ctx, a.access().all(), nil)
}

// GetAlgorithm returns an algorithm p may see.
func (s *Service) GetAlgorithm(ctx context.Context, p cove.Principal, id string) (*Algorithm, error) {
	return s.useAlgorithm(ctx, p, id, authz.CanView)
}

// UseAlgorithm returns an algorithm p may name in a computation: not_found
// when p cannot see it, forbidden when p can see but not use it.
func (s *Service) UseAlgorithm(ctx context.Context, p cove.Principal, id string) (*Algorithm, error) {
	return s.useAlgorithm(ctx, p, id, authz.CanUse)
}

func (s *Service) useAlgorithm(ctx context.Context, p cove.Principal, id, relation string) (*Algorithm, error) {
	if err := s.require(ctx, p, "alg", id, relation); err != nil {
		return nil, err
	}
	a, err := s.store.FindAlgorithmByID(ctx, id)
	if err != nil {
		return nil, err
	}
	return a, s.redact(ctx, p, a.WorkspaceID, &a.SharedWith)
}

// FindAlgorithmByID returns an algorithm without any authorization check,
// for the run path, which has checked already.
func (s *Service) FindAlgorithmByID(ctx context.Context, id string) (*Algorithm, error) {
	return s.store.FindAlgorithmByID(ctx, id)
}

// ListAlgorithms returns the algorithms p may see that match f, by the
// rules of ListDatasets.
func (s *Service) ListAlgorithms(ctx context.Context, p cove.Principal, f Filter, page cove.Page) ([]*Algorithm, error) {
	if err := f.validate(true); err != nil {
		return nil, err
	}
	return s.store.FindAlgorithms(ctx, p.UserID, f, page.Normalize())
}

// UpdateAlgorithm changes an algorithm's name, description, visibility or
// CWL; members of its workspace may. Its content and arguments never
// change: upload a new algorithm instead.
func (s *Service) UpdateAlgorithm(ctx context.Context, p cove.Principal, id string, upd AlgorithmUpdate) (*Algorithm, error) {
	if err := s.require(ctx, p, "alg", id, authz.CanEdit); err != nil {
		return nil, err
	}
	if err := s.checkUpdate(ctx, upd.Name, upd.Description, upd.Visibility, upd.SharedWith); err != nil {
		return nil, err
	}
	if upd.CWL != nil {
		if err := validateCWL(*upd.CWL); err != nil {
			return nil, err
		}
	}
	var a *Algorithm
	var grants []authz.Tuple
	var undo func()
	err := s.store.Atomic(ctx, func(tx Store) error {
		if err := tx.LockAlgorithm(ctx, id); err != nil {
			return err
		}
		old, err := tx.FindAlgorithmByID(ctx, id)
		if err != nil {
			return err
		}
		a = new(*old)
		if err := applyUpdate(&a.Name, &a.Description, &a.Visibility, &a.SharedWith, upd.Name, upd.Description, upd.Visibility, upd.SharedWith); err != nil {
			return err
		}
		if upd.CWL != nil {
			a.CWL = *upd.CWL
		}
		a.UpdatedAt = s.now()
		oldTs, newTs := old.access().readers(), a.access().readers()
		if undo, err = s.revokeIn(ctx, minus(oldTs, newTs)); err != nil {
			return err
		}
		grants = minus(newTs, oldTs)
		if err := tx.UpdateAlgorithm(ctx, a); err != nil {
			return err
		}
		return tx.RecordAudit(ctx, s.entry(p, a.WorkspaceID, "algorithm.update", id, "visibility "+string(a.Visibility)))
	})
	if err != nil {
		if undo != nil {
			undo()
		}
		return nil, err
	}
	return a, s.authz.Write(ctx, grants, nil)
}

// DeleteAlgorithm deletes an algorithm; admins of its workspace may, and
// not while a computation uses it (conflict). Its content is removed too
// unless another entry has the same.
func (s *Service) DeleteAlgorithm(ctx context.Context, p cove.Principal, id string) error {
	if err := s.require(ctx, p, "alg", id, authz.CanDelete); err != nil {
		return err
	}
	if s.Usage != nil {
		inUse, err := s.Usage.AlgorithmInUse(ctx, id)
		if err != nil {
			return err
		}
		if inUse {
			return cove.Errorf(cove.Conflict, "algorithm %s is used by a computation; delete the computation first", id)
		}
	}
	return s.deleteEntry(ctx, p, "algorithm.delete", func(tx Store) (access, string, error) {
		if err := tx.LockAlgorithm(ctx, id); err != nil {
			return access{}, "", err
		}
		a, err := tx.FindAlgorithmByID(ctx, id)
		if err != nil {
			return access{}, "", err
		}
		return a.access(), a.SHA256, nil
	}, func(tx Store) error { return tx.DeleteAlgorithm(ctx, id) })
}

// checkUpdate validates the fields of an update that do not depend on
// the entry.
func (s *Service) checkUpdate(ctx context.Context, name, description *string, v *Visibility, shared *[]string) error {
	if name != nil {
		if err := validateName(*name); err != nil {
			return err
		}
	}
	if description != nil {
		if err := validateText("description", *description, MaxDescriptionLen); err != nil {
			return err
		}
	}
	if v != nil {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	if shared != nil {
		for _, id := range *shared {
			if !cove.ValidID("ws", id) {
				return invalid("shared_with", "holds %q, which is not a workspace ID", id)
			}
		}
		return s.checkShares(ctx, *shared)
	}
	return nil
}

// applyUpdate applies the common fields of an update to an entry's.
// Leaving restricted clears the shares; restricted keeps the old shares
// unless new ones are given.
func applyUpdate(name, description *string, v *Visibility, shared *[]string, newName, newDescription *string, newV *Visibility, newShared *[]string) error {
	if newName != nil {
		*name = *newName
	}
	if newDescription != nil {
		*description = *newDescription
	}
	if newV != nil {
		if *newV != Restricted && newShared == nil {
			*shared = nil
		}
		*v = *newV
	}
	if newShared != nil {
		*shared = *newShared
	}
	out, err := sharing(*v, *shared)
	if err != nil {
		return err
	}
	*shared = out
	return nil
}

// validate checks a list filter; kinds are for algorithms only.
func (f Filter) validate(algorithms bool) error {
	if len(f.Name) > 4*MaxNameLen {
		return invalid("name", "is longer than a name can be")
	}
	if f.WorkspaceID != "" && !cove.ValidID("ws", f.WorkspaceID) {
		return invalid("workspace", "is not a workspace ID")
	}
	if f.Visibility != "" {
		if err := f.Visibility.Validate(); err != nil {
			return err
		}
	}
	if f.Kind != "" {
		if !algorithms {
			return invalid("kind", "filters algorithms only")
		}
		switch f.Kind {
		case KindWasm, KindBin, KindPython:
		default:
			return invalid("kind", "must be wasm, bin or python, not %q", f.Kind)
		}
	}
	return nil
}

// SyncRelations writes the parent and reader relations of every entry in
// the store. It runs at start and repairs grants that failed after their
// commit.
func (s *Service) SyncRelations(ctx context.Context) error {
	var ts []authz.Tuple
	err := s.store.FindAllDatasets(ctx, func(d *Dataset) error {
		ts = append(ts, d.access().all()...)
		return nil
	})
	if err != nil {
		return err
	}
	err = s.store.FindAllAlgorithms(ctx, func(a *Algorithm) error {
		ts = append(ts, a.access().all()...)
		return nil
	})
	if err != nil {
		return err
	}
	return s.authz.Write(ctx, ts, nil)
}
