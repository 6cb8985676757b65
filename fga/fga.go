// Package fga implements authz.Store with OpenFGA embedded in the process:
// its server runs as a library and is called through its Go methods, with
// no network hop, storing tuples in SQLite or PostgreSQL.
//
// Open runs OpenFGA's own migrations, finds or creates the store named
// "cove" and installs authz.Model when it changed. OpenFGA's caches stay
// off: they expire on a timer rather than on writes, so they would answer
// from before a grant or a revoke, and every Cove replica must see a write
// at once. The Store keeps its own answers instead, valid until the next
// Write on any replica (see decisions.go).
package fga

import (
	"context"
	"log/slog"
	"sync"
	"time"

	openfgav1 "github.com/openfga/api/proto/openfga/v1"
	"github.com/openfga/language/pkg/go/transformer"
	"github.com/openfga/openfga/pkg/server"
	"github.com/openfga/openfga/pkg/storage/sqlcommon"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/covecompute/cove"
	"github.com/covecompute/cove/authz"
)

// StoreName is the name of the OpenFGA store that holds Cove's tuples.
const StoreName = "cove"

// Engines Open accepts.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Schema is the PostgreSQL schema that holds OpenFGA's tables, apart from
// Cove's own tables in the same database.
const Schema = "openfga"

// Config says where the tuples live.
type Config struct {
	// Engine is SQLite or Postgres.
	Engine string
	// URI is the SQLite file, such as <datadir>/authz.db, or a PostgreSQL
	// URL (postgres://...).
	URI string
	// Logger receives OpenFGA's warnings and errors; nil discards them.
	Logger *slog.Logger
}

// Store is an embedded OpenFGA server with one store and one model, and a
// memory of Check answers that a Write anywhere invalidates.
type Store struct {
	server    *server.Server
	storeID   string
	modelID   string
	maxWrite  int // tuples per OpenFGA write request, writes and deletes together
	revision  counter
	decisions decisions

	closeOnce sync.Once
}

var _ authz.Store = (*Store)(nil)

// Open opens the tuples described by cfg, migrating the database and
// installing authz.Model first. It returns Invalid for a bad cfg. Call
// Close when done.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.URI == "" {
		return nil, cove.Errorf(cove.Invalid, "the authorization store needs a database URI")
	}
	log := newLogger(cfg.Logger)
	dbcfg := sqlcommon.NewConfig(sqlcommon.WithLogger(log))

	var (
		db  *database
		err error
	)
	switch cfg.Engine {
	case SQLite:
		db, err = openSQLite(ctx, cfg.URI, dbcfg)
	case Postgres:
		db, err = openPostgres(ctx, cfg.URI, dbcfg)
	default:
		return nil, cove.Errorf(cove.Invalid, "unknown authorization store engine %q; use %q or %q", cfg.Engine, SQLite, Postgres)
	}
	if err != nil {
		return nil, err
	}

	srv, err := server.NewServerWithOpts(
		server.WithDatastore(db.ds),
		server.WithLogger(log),
		server.WithCheckQueryCacheEnabled(false),
		server.WithCheckIteratorCacheEnabled(false),
		server.WithListObjectsIteratorCacheEnabled(false),
		server.WithSharedIteratorEnabled(false),
		server.WithCacheControllerEnabled(false),
		// OpenFGA ends ListObjects at its deadline or result cap and returns
		// what it found so far as if it were all. Without either, only the
		// caller's context ends it, and ListObjects can tell.
		server.WithListObjectsDeadline(0),
		server.WithListObjectsMaxResults(0),
	)
	if err != nil {
		db.unlock()
		db.revision.close()
		db.ds.Close()
		return nil, cove.Wrap(err, "cannot start the authorization server")
	}
	s := &Store{server: srv, maxWrite: db.ds.MaxTuplesPerWrite(), revision: db.revision}
	// Other replicas wait for the unlock, so they find the store this one
	// created and the model it installed. Unlock before closing: closing a
	// PostgreSQL pool waits for the connection that holds the lock.
	err = s.install(ctx)
	db.unlock()
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close stops the server and closes the database. It may be called more
// than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.revision.close()
		s.server.Close()
	})
	return nil
}

// ModelID returns the ID of the authorization model in use, for logs: it
// stays the same across restarts until authz.Model changes.
func (s *Store) ModelID() string { return s.modelID }

// install finds or creates the store and makes authz.Model its latest
// model, writing it only when it differs from the latest stored one so
// that restarts do not pile up models.
func (s *Store) install(ctx context.Context) error {
	want, err := transformer.TransformDSLToProto(authz.Model)
	if err != nil {
		return cove.Wrap(err, "the authorization model does not parse")
	}

	// Stores list in creation order: taking the first named "cove" makes
	// every replica pick the same one even if two were ever created.
	stores, err := s.server.ListStores(ctx, &openfgav1.ListStoresRequest{Name: StoreName, PageSize: wrapperspb.Int32(1)})
	if err != nil {
		return cove.Wrap(err, "cannot list authorization stores")
	}
	if len(stores.GetStores()) > 0 {
		s.storeID = stores.GetStores()[0].GetId()
	} else {
		created, err := s.server.CreateStore(ctx, &openfgav1.CreateStoreRequest{Name: StoreName})
		if err != nil {
			return cove.Wrap(err, "cannot create the authorization store")
		}
		s.storeID = created.GetId()
	}

	models, err := s.server.ReadAuthorizationModels(ctx, &openfgav1.ReadAuthorizationModelsRequest{StoreId: s.storeID, PageSize: wrapperspb.Int32(1)})
	if err != nil {
		return cove.Wrap(err, "cannot read the authorization model")
	}
	if latest := models.GetAuthorizationModels(); len(latest) > 0 && sameModel(latest[0], want) {
		s.modelID = latest[0].GetId()
		return nil
	}
	written, err := s.server.WriteAuthorizationModel(ctx, &openfgav1.WriteAuthorizationModelRequest{
		StoreId:         s.storeID,
		SchemaVersion:   want.GetSchemaVersion(),
		TypeDefinitions: want.GetTypeDefinitions(),
		Conditions:      want.GetConditions(),
	})
	if err != nil {
		return cove.Wrap(err, "cannot write the authorization model")
	}
	s.modelID = written.GetAuthorizationModelId()
	return nil
}

// sameModel reports whether two models make the same decisions, ignoring
// their IDs.
func sameModel(a, b *openfgav1.AuthorizationModel) bool {
	a, b = proto.CloneOf(a), proto.CloneOf(b)
	a.Id, b.Id = "", ""
	return proto.Equal(a, b)
}

// Check reports whether subject holds relation on object.
func (s *Store) Check(ctx context.Context, subject, relation, object string) (bool, error) {
	rev, err := s.revision.read(ctx)
	if err != nil {
		return false, unavailable(ctx, err)
	}
	k := checkKey{subject, relation, object}
	if allowed, ok := s.decisions.get(rev, k); ok {
		return allowed, nil
	}
	res, err := s.server.Check(ctx, &openfgav1.CheckRequest{
		StoreId:              s.storeID,
		AuthorizationModelId: s.modelID,
		TupleKey:             &openfgav1.CheckRequestTupleKey{User: subject, Relation: relation, Object: object},
		// OpenFGA's caches are off; this keeps a check from ever being
		// answered from one, should a default change.
		Consistency: openfgav1.ConsistencyPreference_HIGHER_CONSISTENCY,
	})
	if err != nil {
		return false, convert(ctx, err)
	}
	s.decisions.put(rev, k, res.GetAllowed())
	return res.GetAllowed(), nil
}

// Write deletes, then writes tuples, in as few OpenFGA requests as its
// per-request limit (100 tuples) allows; each request is one transaction.
// It moves the revision on, so no replica answers a Check from before it.
func (s *Store) Write(ctx context.Context, writes, deletes []authz.Tuple) (err error) {
	writes, deletes = unique(writes), unique(deletes)
	inDeletes := make(map[authz.Tuple]bool, len(deletes))
	for _, t := range deletes {
		inDeletes[t] = true
	}
	for _, t := range writes {
		if inDeletes[t] {
			return cove.Errorf(cove.Invalid, "tuple %s is both written and deleted", t)
		}
	}
	if len(writes)+len(deletes) == 0 {
		return nil
	}

	if err := s.bump(ctx); err != nil {
		return err
	}
	// Even a failed write may have gone through in part.
	defer func() {
		if berr := s.bump(ctx); err == nil {
			err = berr
		}
	}()

	// Deletes first, then writes, cut into requests of at most maxWrite.
	for len(deletes)+len(writes) > 0 {
		d := deletes[:min(len(deletes), s.maxWrite)]
		w := writes[:min(len(writes), s.maxWrite-len(d))]
		deletes, writes = deletes[len(d):], writes[len(w):]
		if err := s.write(ctx, w, d); err != nil {
			return err
		}
	}
	return nil
}

// bump moves the revision on. It runs even when ctx has ended, since a
// write may have gone through: better a late bump than stale answers.
func (s *Store) bump(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.revision.bump(ctx); err != nil {
		return unavailable(ctx, err)
	}
	return nil
}

func (s *Store) write(ctx context.Context, writes, deletes []authz.Tuple) error {
	req := &openfgav1.WriteRequest{StoreId: s.storeID, AuthorizationModelId: s.modelID}
	if len(writes) > 0 {
		req.Writes = &openfgav1.WriteRequestWrites{OnDuplicate: "ignore"}
		for _, t := range writes {
			req.Writes.TupleKeys = append(req.Writes.TupleKeys, &openfgav1.TupleKey{User: t.Subject, Relation: t.Relation, Object: t.Object})
		}
	}
	if len(deletes) > 0 {
		req.Deletes = &openfgav1.WriteRequestDeletes{OnMissing: "ignore"}
		for _, t := range deletes {
			req.Deletes.TupleKeys = append(req.Deletes.TupleKeys, &openfgav1.TupleKeyWithoutCondition{User: t.Subject, Relation: t.Relation, Object: t.Object})
		}
	}
	if _, err := s.server.Write(ctx, req); err != nil {
		return convert(ctx, err)
	}
	return nil
}

// unique drops repeated tuples, which OpenFGA rejects within a request.
func unique(tuples []authz.Tuple) []authz.Tuple {
	seen := make(map[authz.Tuple]bool, len(tuples))
	out := make([]authz.Tuple, 0, len(tuples))
	for _, t := range tuples {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

// ListObjects returns the objects of objectType on which subject holds
// relation.
func (s *Store) ListObjects(ctx context.Context, subject, relation, objectType string) ([]string, error) {
	res, err := s.server.ListObjects(ctx, &openfgav1.ListObjectsRequest{
		StoreId:              s.storeID,
		AuthorizationModelId: s.modelID,
		User:                 subject,
		Relation:             relation,
		Type:                 objectType,
		Consistency:          openfgav1.ConsistencyPreference_HIGHER_CONSISTENCY,
	})
	if err != nil {
		return nil, convert(ctx, err)
	}
	// OpenFGA returns what it found when the context ends, with no error.
	if err := ctx.Err(); err != nil {
		return nil, convert(ctx, context.Cause(ctx))
	}
	return res.GetObjects(), nil
}
