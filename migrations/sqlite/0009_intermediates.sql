-- Rotation of the issuing intermediate (issue 16): every intermediate the CA has had, a CRL per
-- intermediate, each certificate's issuer, and the intermediate's steps in the log and the feed.
--
-- The intermediate made at initialisation is number 1; its row is written at start-up from
-- intermediate.pem (the database never held its certificate), its key stays where init put it
-- (intermediate.key.sealed or the token). Later ones are made by rotation; their keys are
-- sealed here, so that every replica opens the same key. Under an offline root a new one is
-- `requested` (key made, CSR waiting for the root's signature; no certificate yet) before `next`.
CREATE TABLE issuing_cas (
    number     INTEGER PRIMARY KEY,
    der        BLOB,
    csr        TEXT,
    key_sealed TEXT,
    state      TEXT NOT NULL CHECK (state IN ('requested', 'next', 'published', 'active', 'retiring', 'retired')),
    created_at BIGINT NOT NULL,
    changed_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX issuing_cas_one_active ON issuing_cas (state) WHERE state = 'active';

-- One CRL per intermediate (the single row of `crl` was the first intermediate's).
CREATE TABLE crls (
    issuer      INTEGER PRIMARY KEY,
    number      BIGINT NOT NULL,
    this_update BIGINT NOT NULL,
    next_update BIGINT NOT NULL,
    der         BLOB NOT NULL
);
INSERT INTO crls (issuer, number, this_update, next_update, der)
    SELECT 1, number, this_update, next_update, der FROM crl;
DROP TABLE crl;

ALTER TABLE certificates ADD COLUMN issuer BIGINT NOT NULL DEFAULT 1;

-- SQLite cannot change a CHECK constraint in place: the log's entries and the feed are rebuilt
-- with 'intermediate' among their kinds.
CREATE TABLE log_entries_v9 (
    idx       INTEGER PRIMARY KEY,
    leaf      BLOB NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('issuance', 'revocation', 'membership', 'intermediate')),
    serial    TEXT NOT NULL,
    identity  TEXT NOT NULL,
    at        BIGINT NOT NULL,
    leaf_hash BLOB
);
INSERT INTO log_entries_v9 (idx, leaf, kind, serial, identity, at, leaf_hash)
    SELECT idx, leaf, kind, serial, identity, at, leaf_hash FROM log_entries ORDER BY idx;
DROP TABLE log_entries;
ALTER TABLE log_entries_v9 RENAME TO log_entries;
CREATE INDEX log_entries_serial ON log_entries (serial);
CREATE INDEX log_entries_identity ON log_entries (identity);
CREATE INDEX log_entries_leaf_hash ON log_entries (leaf_hash);
CREATE INDEX log_entries_at ON log_entries (at);

CREATE TABLE feed_v9 (
    seq         BIGINT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('membership', 'revocation', 'directory', 'intermediate')),
    subchain_id TEXT,
    revision    BIGINT,
    serial      TEXT,
    identity_id TEXT,
    reason      TEXT,
    at          BIGINT NOT NULL
);
INSERT INTO feed_v9 SELECT seq, kind, subchain_id, revision, serial, identity_id, reason, at FROM feed;
DROP TABLE feed;
ALTER TABLE feed_v9 RENAME TO feed;
