-- Rotation of the root (issue 16): every root the CA has had, with the certificate of its key by
-- the root before it (the cross-certificate through which a verifier that trusts the old root
-- trusts the new one), its CRL, its key when the CA holds it, and which root certified each
-- intermediate.
--
-- The root of initialisation is number 1; its row is written at start-up from root.pem, its key
-- and CRL stay where init put them (root.key.sealed or the token, root-crl.der; none under an
-- offline root). A later root is `published` (in the trust bundle beside the active one), then
-- `active` (it certifies the next intermediates), and its predecessor `retiring` (still trusted:
-- intermediates it certified may still issue or have valid certificates) until it is `withdrawn`
-- (out of the bundle; its sealed key erased).
CREATE TABLE roots (
    number     INTEGER PRIMARY KEY,
    der        BLOB NOT NULL,
    cross_der  BLOB,
    crl        BLOB,
    key_sealed TEXT,
    key_label  TEXT,
    state      TEXT NOT NULL CHECK (state IN ('published', 'active', 'retiring', 'withdrawn')),
    created_at BIGINT NOT NULL,
    changed_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX roots_one_active ON roots (state) WHERE state = 'active';

ALTER TABLE issuing_cas ADD COLUMN root BIGINT NOT NULL DEFAULT 1;

-- SQLite cannot change a CHECK constraint in place: the log's entries and the feed are rebuilt
-- with 'root' among their kinds.
CREATE TABLE log_entries_v13 (
    idx       INTEGER PRIMARY KEY,
    leaf      BLOB NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('issuance', 'revocation', 'membership', 'intermediate', 'key', 'root')),
    serial    TEXT NOT NULL,
    identity  TEXT NOT NULL,
    at        BIGINT NOT NULL,
    leaf_hash BLOB
);
INSERT INTO log_entries_v13 (idx, leaf, kind, serial, identity, at, leaf_hash)
    SELECT idx, leaf, kind, serial, identity, at, leaf_hash FROM log_entries ORDER BY idx;
DROP TABLE log_entries;
ALTER TABLE log_entries_v13 RENAME TO log_entries;
CREATE INDEX log_entries_serial ON log_entries (serial);
CREATE INDEX log_entries_identity ON log_entries (identity);
CREATE INDEX log_entries_leaf_hash ON log_entries (leaf_hash);
CREATE INDEX log_entries_at ON log_entries (at);

CREATE TABLE feed_v13 (
    seq         BIGINT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('membership', 'revocation', 'directory', 'intermediate', 'key', 'root')),
    subchain_id TEXT,
    revision    BIGINT,
    serial      TEXT,
    identity_id TEXT,
    reason      TEXT,
    at          BIGINT NOT NULL
);
INSERT INTO feed_v13 SELECT seq, kind, subchain_id, revision, serial, identity_id, reason, at FROM feed;
DROP TABLE feed;
ALTER TABLE feed_v13 RENAME TO feed;
