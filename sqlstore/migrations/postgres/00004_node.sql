-- +goose Up
-- Compute nodes. workspace_id is NULL for a platform node, which serves
-- every workspace; a workspace's nodes go with it. The state is derived:
-- pending until approved_at, then lost while lost_at is set, else draining
-- or active. Drivers (a JSON array) and labels (a JSON object) are checked
-- by the node service.
CREATE TABLE nodes (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    workspace_id          TEXT REFERENCES workspaces (id) ON DELETE CASCADE,
    cpus                  DOUBLE PRECISION NOT NULL CHECK (cpus > 0),
    memory_bytes          BIGINT NOT NULL CHECK (memory_bytes > 0),
    disk_bytes            BIGINT NOT NULL DEFAULT 0,
    drivers               TEXT NOT NULL,
    labels                TEXT NOT NULL,
    tee                   TEXT NOT NULL,
    enroll_token_id       TEXT NOT NULL,
    draining              BOOLEAN NOT NULL DEFAULT FALSE,
    approved_at           TIMESTAMPTZ,
    approved_by           TEXT NOT NULL DEFAULT '',
    last_seen_at          TIMESTAMPTZ,
    lost_at               TIMESTAMPTZ,
    credential_expires_at TIMESTAMPTZ NOT NULL,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL
);
CREATE INDEX nodes_workspace ON nodes (workspace_id, id);

-- One-time enrollment tokens, stored as the SHA-256 of the secret.
CREATE TABLE node_enroll_tokens (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT REFERENCES workspaces (id) ON DELETE CASCADE,
    token_hash   TEXT NOT NULL UNIQUE,
    auto_approve BOOLEAN NOT NULL,
    created_by   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at   TIMESTAMPTZ NOT NULL,
    used_at      TIMESTAMPTZ,
    node_id      TEXT NOT NULL DEFAULT '',
    revoked_at   TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX node_enroll_tokens_workspace ON node_enroll_tokens (workspace_id, id);

-- +goose Down
DROP TABLE node_enroll_tokens;
DROP TABLE nodes;
