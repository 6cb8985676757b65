-- +goose Up
-- Certificates the CA issued. serial is the lowercase hex serial number;
-- id orders them by issue time for lists. dns_names and ip_addresses are
-- JSON arrays. owner is a user ID or, for node certificates, the node ID:
-- no foreign key, since a revoked certificate must stay on the CRL after
-- its owner is gone.
CREATE TABLE ca_certificates (
    id                TEXT PRIMARY KEY,
    serial            TEXT NOT NULL UNIQUE,
    kind              TEXT NOT NULL CHECK (kind IN ('node', 'agent', 'user', 'server')),
    common_name       TEXT NOT NULL,
    dns_names         TEXT NOT NULL,
    ip_addresses      TEXT NOT NULL,
    owner             TEXT NOT NULL,
    fingerprint       TEXT NOT NULL UNIQUE,
    not_before        TIMESTAMP NOT NULL,
    not_after         TIMESTAMP NOT NULL,
    revoked_at        TIMESTAMP,
    revocation_reason TEXT NOT NULL DEFAULT '',
    renewed_from      TEXT NOT NULL DEFAULT '',
    created_by        TEXT NOT NULL DEFAULT '',
    created_at        TIMESTAMP NOT NULL,
    pem               TEXT NOT NULL
);
CREATE INDEX ca_certificates_owner ON ca_certificates (owner, id);
CREATE INDEX ca_certificates_revoked ON ca_certificates (revoked_at) WHERE revoked_at IS NOT NULL;

-- Every CRL issued; number is the CRL number extension, increasing.
CREATE TABLE ca_crls (
    number      BIGINT PRIMARY KEY,
    this_update TIMESTAMP NOT NULL,
    next_update TIMESTAMP NOT NULL,
    der         BLOB NOT NULL
);

-- +goose Down
DROP TABLE ca_crls;
DROP TABLE ca_certificates;
