-- The issuance log: an RFC 6962 Merkle tree. Leaves are issuance and revocation events in the
-- canonical encoding of identity::logleaf; hashes are Go sumdb/tlog's stored hashes (post-order
-- index); log_state is the one row the sequencer locks, with the latest signed checkpoint.
CREATE TABLE log_state (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    size       BIGINT NOT NULL,
    root       BYTEA NOT NULL,
    checkpoint TEXT NOT NULL
);

CREATE TABLE log_entries (
    idx      BIGINT PRIMARY KEY,
    leaf     BYTEA NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('issuance', 'revocation')),
    serial   TEXT NOT NULL,
    identity TEXT NOT NULL,
    at       BIGINT NOT NULL
);
CREATE INDEX log_entries_serial ON log_entries (serial);
CREATE INDEX log_entries_identity ON log_entries (identity);

CREATE TABLE log_hashes (
    idx  BIGINT PRIMARY KEY,
    hash BYTEA NOT NULL
);

ALTER TABLE certificates ADD COLUMN log_index BIGINT;
ALTER TABLE certificates ADD COLUMN revocation_log_index BIGINT;
