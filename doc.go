// Package cove holds the few types every other package shares: the error
// type with its closed set of codes, identifiers and cursor pagination.
//
// Domain packages (identity, workspace, authz, catalog, computation, ...)
// import this package and the standard library only; adapters (sqlstore,
// natsbus, httpapi, ...) import domains. See docs/architecture.md.
package cove
