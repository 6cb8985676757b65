-- +goose Up
-- A node's identity beyond its enrollment: the NATS user key it holds (its
-- seed never leaves the node), the serial and expiry of its current client
-- certificate, and when it was revoked. A revoked node stays revoked: its
-- state is derived from revoked_at before anything else.
ALTER TABLE nodes ADD COLUMN nats_user TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN certificate_serial TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN certificate_expires_at TIMESTAMPTZ;
ALTER TABLE nodes ADD COLUMN revoked_at TIMESTAMPTZ;

-- +goose Down
ALTER TABLE nodes DROP COLUMN revoked_at;
ALTER TABLE nodes DROP COLUMN certificate_expires_at;
ALTER TABLE nodes DROP COLUMN certificate_serial;
ALTER TABLE nodes DROP COLUMN nats_user;
