package authz

import (
	_ "embed" // for the model
	"strings"
)

// Model is the OpenFGA model (DSL, schema 1.1) that every decision is made
// against. Adapters install it at start; it lives here, next to the names
// below, so a relation cannot be renamed in one place and not the other.
//
//go:embed model.fga
var Model string

// Object types of the model.
const (
	TypeUser        = "user"
	TypePlatform    = "platform"
	TypeWorkspace   = "workspace"
	TypeDataset     = "dataset"
	TypeAlgorithm   = "algorithm"
	TypeComputation = "computation"
	TypeNode        = "node"
)

// Platform is the one platform object. Its admins are the platform admins.
const Platform = TypePlatform + ":cove"

// AllUsers is the subject that stands for every user. A catalog entry with
// an AllUsers reader tuple is public.
const AllUsers = TypeUser + ":*"

// Relations that services write as tuples: roles and parents.
const (
	Owner             = "owner"              // workspace owner; computation owner
	Admin             = "admin"              // workspace or platform admin
	Member            = "member"             // workspace member
	Viewer            = "viewer"             // workspace viewer; computation viewer
	Reader            = "reader"             // who may see a catalog entry beyond its workspace
	AlgorithmProvider = "algorithm_provider" // computation participant
	DatasetProvider   = "dataset_provider"   // computation participant, approves runs
	ResultConsumer    = "result_consumer"    // computation participant, reads results
	Runner            = "runner"             // computation participant, starts runs

	// ParentWorkspace links a dataset, algorithm, computation or node to the
	// workspace that owns it.
	ParentWorkspace = "workspace"
	// ParentPlatform links a workspace or node to Platform.
	ParentPlatform = "platform"
)

// Permissions: the relations services check. Which types have which is
// written in model.fga.
const (
	CanView          = "can_view"
	CanWrite         = "can_write"
	CanEdit          = "can_edit"
	CanDelete        = "can_delete"
	CanUse           = "can_use"
	CanRun           = "can_run"
	CanApprove       = "can_approve"
	CanReadResults   = "can_read_results"
	CanManage        = "can_manage"
	CanManageMembers = "can_manage_members"
	CanReadAudit     = "can_read_audit"
)

// User returns the subject or object naming user id.
func User(id string) string { return TypeUser + ":" + id }

// Workspace returns the object naming workspace id.
func Workspace(id string) string { return TypeWorkspace + ":" + id }

// Dataset returns the object naming dataset id.
func Dataset(id string) string { return TypeDataset + ":" + id }

// Algorithm returns the object naming algorithm id.
func Algorithm(id string) string { return TypeAlgorithm + ":" + id }

// Computation returns the object naming computation id.
func Computation(id string) string { return TypeComputation + ":" + id }

// Node returns the object naming node id.
func Node(id string) string { return TypeNode + ":" + id }

// Userset returns the subject that stands for everyone holding relation on
// object, such as Userset(Workspace(id), Viewer) to share a catalog entry
// with every viewer of a workspace.
func Userset(object, relation string) string { return object + "#" + relation }

// ID returns the ID part of an object such as "dataset:ds_x", and "" when
// object has no type prefix.
func ID(object string) string {
	_, id, ok := strings.Cut(object, ":")
	if !ok {
		return ""
	}
	return id
}
