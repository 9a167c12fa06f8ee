-- no-transaction
-- Orderer identities and the node directory (DESIGN section 11).
--
-- SQLite cannot change a CHECK constraint in place: identities is rebuilt with foreign keys
-- off (the documented procedure: new table, copy, drop, rename, foreign_key_check), all in one
-- transaction; the feed's kind check the same way.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE identities_v6 (
    id                TEXT PRIMARY KEY,
    kind              TEXT NOT NULL CHECK (kind IN ('participant', 'node', 'orderer')),
    roles             TEXT NOT NULL,
    attributes        TEXT NOT NULL,
    dns_names         TEXT NOT NULL,
    ip_addresses      TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    secret_hash       TEXT,
    secret_expires_at BIGINT,
    enrollments_left  BIGINT NOT NULL,
    registered_by     TEXT NOT NULL,
    created_at        BIGINT NOT NULL
);
INSERT INTO identities_v6 SELECT id, kind, roles, attributes, dns_names, ip_addresses, status,
    secret_hash, secret_expires_at, enrollments_left, registered_by, created_at FROM identities;
DROP TABLE identities;
ALTER TABLE identities_v6 RENAME TO identities;

CREATE TABLE feed_v6 (
    seq         BIGINT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('membership', 'revocation', 'directory')),
    subchain_id TEXT,
    revision    BIGINT,
    serial      TEXT,
    identity_id TEXT,
    reason      TEXT,
    at          BIGINT NOT NULL
);
INSERT INTO feed_v6 SELECT seq, kind, subchain_id, revision, serial, identity_id, reason, at FROM feed;
DROP TABLE feed;
ALTER TABLE feed_v6 RENAME TO feed;

-- The orderers that order each subchain (its Raft voters); none: its city nodes order it.
CREATE TABLE subchain_orderers (
    orderer_id  TEXT NOT NULL REFERENCES identities (id),
    subchain_id TEXT NOT NULL REFERENCES subchains (id),
    PRIMARY KEY (orderer_id, subchain_id)
);
CREATE INDEX subchain_orderers_subchain ON subchain_orderers (subchain_id);

-- Each city node's and orderer's own entry: set only by the node itself, with its certificate.
CREATE TABLE network_nodes (
    id         TEXT PRIMARY KEY REFERENCES identities (id),
    city       TEXT NOT NULL,
    url        TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Every revision of the signed directory (payload bytes and Ed25519 signature).
CREATE TABLE directory_revisions (
    revision  BIGINT PRIMARY KEY,
    payload   BLOB NOT NULL,
    signature BLOB NOT NULL,
    at        BIGINT NOT NULL
);
COMMIT;
PRAGMA foreign_key_check;
PRAGMA foreign_keys = ON;
