-- +goose Up
-- Datasets and algorithms. Their content is in the blob store under
-- sha256; several entries may share one content. Policy and args are JSON.
-- Kinds and formats are checked by the catalog service, so that adding one
-- needs no table rebuild.
CREATE TABLE datasets (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    format       TEXT NOT NULL,
    file_name    TEXT NOT NULL DEFAULT '',
    sha256       TEXT NOT NULL,
    size         BIGINT NOT NULL,
    visibility   TEXT NOT NULL CHECK (visibility IN ('public', 'private', 'restricted')),
    policy       TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX datasets_workspace ON datasets (workspace_id, id);
CREATE INDEX datasets_visibility ON datasets (visibility, id);
CREATE INDEX datasets_sha256 ON datasets (sha256);

-- The workspaces a restricted dataset is shared with.
CREATE TABLE dataset_shares (
    dataset_id   TEXT NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    PRIMARY KEY (dataset_id, workspace_id)
);
CREATE INDEX dataset_shares_workspace ON dataset_shares (workspace_id, dataset_id);

CREATE TABLE algorithms (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    kind         TEXT NOT NULL,
    file_name    TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    size         BIGINT NOT NULL,
    args         TEXT NOT NULL,
    cwl          TEXT NOT NULL DEFAULT '',
    visibility   TEXT NOT NULL CHECK (visibility IN ('public', 'private', 'restricted')),
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX algorithms_workspace ON algorithms (workspace_id, id);
CREATE INDEX algorithms_visibility ON algorithms (visibility, id);
CREATE INDEX algorithms_sha256 ON algorithms (sha256);

CREATE TABLE algorithm_shares (
    algorithm_id TEXT NOT NULL REFERENCES algorithms (id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    PRIMARY KEY (algorithm_id, workspace_id)
);
CREATE INDEX algorithm_shares_workspace ON algorithm_shares (workspace_id, algorithm_id);

-- +goose Down
DROP TABLE algorithm_shares;
DROP TABLE algorithms;
DROP TABLE dataset_shares;
DROP TABLE datasets;
