-- +goose Up
-- Computations. The manifest is stored exactly as hashed (canonical JSON),
-- so its digest can be recomputed from the row; once a computation has a
-- run (it is frozen) neither changes. Args, result consumers and labels
-- are JSON. Datasets and algorithms are not foreign keys: a computation
-- outlives a catalog entry it names, and a dry run reports it as gone.
CREATE TABLE computations (
    id                     TEXT PRIMARY KEY,
    workspace_id           TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name                   TEXT NOT NULL,
    description            TEXT NOT NULL DEFAULT '',
    algorithm_id           TEXT NOT NULL,
    algorithm_workspace_id TEXT NOT NULL,
    args                   TEXT NOT NULL,
    result_consumers       TEXT NOT NULL,
    cpus                   DOUBLE PRECISION NOT NULL,
    memory_bytes           BIGINT NOT NULL,
    disk_bytes             BIGINT NOT NULL,
    max_duration_seconds   BIGINT NOT NULL,
    network                BOOLEAN NOT NULL,
    labels                 TEXT NOT NULL,
    manifest               TEXT NOT NULL,
    manifest_sha256        TEXT NOT NULL,
    created_by             TEXT NOT NULL,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL
);
CREATE INDEX computations_workspace ON computations (workspace_id, id);

-- The datasets of a computation, in order; name is the sandbox directory.
CREATE TABLE computation_datasets (
    computation_id TEXT NOT NULL REFERENCES computations (id) ON DELETE CASCADE,
    position       INTEGER NOT NULL,
    name           TEXT NOT NULL,
    dataset_id     TEXT NOT NULL,
    workspace_id   TEXT NOT NULL,
    PRIMARY KEY (computation_id, position),
    UNIQUE (computation_id, name),
    UNIQUE (computation_id, dataset_id)
);
CREATE INDEX computation_datasets_dataset ON computation_datasets (dataset_id);

-- A dataset provider's decision, for the manifest it was made on.
CREATE TABLE computation_approvals (
    computation_id  TEXT NOT NULL REFERENCES computations (id) ON DELETE CASCADE,
    dataset_id      TEXT NOT NULL,
    decision        TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
    user_id         TEXT NOT NULL,
    comment         TEXT NOT NULL DEFAULT '',
    manifest_sha256 TEXT NOT NULL,
    decided_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (computation_id, dataset_id)
);

CREATE TABLE runs (
    id                TEXT PRIMARY KEY,
    computation_id    TEXT NOT NULL REFERENCES computations (id) ON DELETE CASCADE,
    workspace_id      TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('queued', 'scheduled', 'provisioning', 'attesting', 'receiving', 'running', 'publishing', 'succeeded', 'failed', 'stopped')),
    reason            TEXT NOT NULL DEFAULT '',
    message           TEXT NOT NULL DEFAULT '',
    exit_code         INTEGER,
    node_id           TEXT NOT NULL DEFAULT '',
    driver            TEXT NOT NULL,
    manifest_sha256   TEXT NOT NULL,
    cpu_seconds       DOUBLE PRECISION NOT NULL DEFAULT 0,
    peak_memory_bytes BIGINT NOT NULL DEFAULT 0,
    result_sha256     TEXT NOT NULL DEFAULT '',
    result_size       BIGINT NOT NULL DEFAULT 0,
    created_by        TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    queue_deadline    TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ
);
CREATE INDEX runs_computation ON runs (computation_id, id);
CREATE INDEX runs_active_workspace ON runs (workspace_id, id) WHERE state NOT IN ('succeeded', 'failed', 'stopped');
CREATE INDEX runs_active_node ON runs (node_id, id) WHERE state NOT IN ('succeeded', 'failed', 'stopped');

-- The history of a run: one row per state change, seq 1, 2, ... per run.
CREATE TABLE run_events (
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq     BIGINT NOT NULL,
    time    TIMESTAMPTZ NOT NULL,
    state   TEXT NOT NULL,
    reason  TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, seq)
);

-- +goose Down
DROP TABLE run_events;
DROP TABLE runs;
DROP TABLE computation_approvals;
DROP TABLE computation_datasets;
DROP TABLE computations;
