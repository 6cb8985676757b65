// Package authz is Cove's single authorization decision point. Decisions are
// relationship based (Zanzibar style): services record facts as tuples, such
// as "user:usr_a is admin of workspace:ws_b" or "workspace:ws_b owns
// dataset:ds_c", and ask whether a subject holds a permission on an object;
// the answer follows from the tuples and the rules in model.fga.
//
// Services call an *Authorizer in their service layer, never in handlers,
// and check permissions (the can_* relations), not roles. The Store behind
// it is an adapter (package fga embeds OpenFGA).
package authz

import (
	"context"
	"slices"
	"strings"

	"github.com/covecompute/cove"
)

// Tuple is one relationship: Subject holds Relation on Object. Subject is a
// user ("user:usr_x"), every user (AllUsers) or a userset
// ("workspace:ws_y#viewer"); Object is "type:id".
type Tuple struct {
	Subject  string
	Relation string
	Object   string
}

// NewTuple returns the tuple "subject holds relation on object". Outside
// this package it reads better than a keyed literal.
func NewTuple(subject, relation, object string) Tuple {
	return Tuple{Subject: subject, Relation: relation, Object: object}
}

// String returns the tuple as "subject relation object", for logs and test
// failures.
func (t Tuple) String() string {
	return t.Subject + " " + t.Relation + " " + t.Object
}

// Store holds tuples and answers questions about them.
type Store interface {
	// Check reports whether subject holds relation on object. It returns
	// Invalid when a type or relation is not in the model or a name is
	// malformed, Unavailable when the store is down or busy or the context
	// ends first, and Internal otherwise.
	Check(ctx context.Context, subject, relation, object string) (bool, error)

	// Write deletes the tuples in deletes, then writes those in writes. It is
	// idempotent: writing a tuple that exists or deleting one that does not
	// is no error, so a failed call may simply be repeated. It takes any
	// number of tuples; an adapter may apply a large call in several
	// transactions. It returns Invalid when a tuple breaks the model or one
	// tuple is both written and deleted, Unavailable when the store is down
	// or busy, and Internal otherwise.
	Write(ctx context.Context, writes, deletes []Tuple) error

	// ListObjects returns every object ("type:id") of objectType on which
	// subject holds relation, complete or not at all. It returns Invalid and
	// Internal like Check, and Unavailable when the context ends before the
	// list is complete.
	ListObjects(ctx context.Context, subject, relation, objectType string) ([]string, error)
}

// Authorizer makes the decisions services need on top of a Store.
type Authorizer struct {
	store Store
}

// New returns an Authorizer that decides with store.
func New(store Store) *Authorizer {
	return &Authorizer{store: store}
}

// Check reports whether subject holds relation on object. It returns the
// errors of Store.Check.
func (a *Authorizer) Check(ctx context.Context, subject, relation, object string) (bool, error) {
	return a.store.Check(ctx, subject, relation, object)
}

// Require returns nil when subject holds relation on object, and Forbidden
// when it does not. Use it where the caller may know the object exists (its
// workspace, the platform); use RequireVisible where it may not. An empty
// subject, no caller at all, is Unauthenticated.
func (a *Authorizer) Require(ctx context.Context, subject, relation, object string) error {
	if subject == "" {
		return cove.Errorf(cove.Unauthenticated, "sign in first")
	}
	ok, err := a.store.Check(ctx, subject, relation, object)
	if err != nil {
		return err
	}
	if !ok {
		return denied(relation, object)
	}
	return nil
}

// RequireVisible is Require for objects whose existence is itself private:
// when subject may not even viewRelation the object it returns NotFound with
// notFoundMsg, the same error as for an object that does not exist, so
// probing IDs reveals nothing. When subject may view but not do relation it
// returns Forbidden. The common allowed case costs one check.
func (a *Authorizer) RequireVisible(ctx context.Context, subject, viewRelation, relation, object, notFoundMsg string) error {
	if subject == "" {
		return cove.Errorf(cove.Unauthenticated, "sign in first")
	}
	ok, err := a.store.Check(ctx, subject, relation, object)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	if relation != viewRelation {
		visible, err := a.store.Check(ctx, subject, viewRelation, object)
		if err != nil {
			return err
		}
		if visible {
			return denied(relation, object)
		}
	}
	return cove.Errorf(cove.NotFound, "%s", notFoundMsg)
}

// Grant writes tuples. Granting what is already granted is no error.
func (a *Authorizer) Grant(ctx context.Context, tuples ...Tuple) error {
	return a.Write(ctx, tuples, nil)
}

// Revoke deletes tuples. Revoking what is not granted is no error.
func (a *Authorizer) Revoke(ctx context.Context, tuples ...Tuple) error {
	return a.Write(ctx, nil, tuples)
}

// Write revokes and grants in one call, for changes that swap tuples, such
// as a new role for a member or a new visibility for a dataset: for the
// small swaps services make, the store applies both in one transaction, so
// no check in between sees neither or both. It returns the errors of
// Store.Write.
func (a *Authorizer) Write(ctx context.Context, grants, revokes []Tuple) error {
	if len(grants) == 0 && len(revokes) == 0 {
		return nil
	}
	return a.store.Write(ctx, grants, revokes)
}

// ListObjects returns the IDs, sorted, of the objects of objectType on
// which subject holds relation, such as the workspaces a user can view. It
// returns the errors of Store.ListObjects.
func (a *Authorizer) ListObjects(ctx context.Context, subject, relation, objectType string) ([]string, error) {
	objects, err := a.store.ListObjects(ctx, subject, relation, objectType)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(objects))
	for _, o := range objects {
		if t, id, ok := strings.Cut(o, ":"); ok && t == objectType {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// denied is the Forbidden error for a missing permission. It names only
// what the caller asked about, so it reveals nothing new.
func denied(relation, object string) error {
	return cove.Errorf(cove.Forbidden, "missing permission %s on %s", relation, object)
}
