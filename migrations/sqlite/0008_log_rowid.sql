-- The log's tables keyed by their index as SQLite's rowid (`INTEGER PRIMARY KEY`). Declared
-- `BIGINT PRIMARY KEY`, each kept a separate index on `idx` beside its rowid B-tree, so every row
-- appended was written to two B-trees (and read through both).
CREATE TABLE log_hashes_v8 (
    idx  INTEGER PRIMARY KEY,
    hash BLOB NOT NULL
);
INSERT INTO log_hashes_v8 (idx, hash) SELECT idx, hash FROM log_hashes ORDER BY idx;
DROP TABLE log_hashes;
ALTER TABLE log_hashes_v8 RENAME TO log_hashes;

CREATE TABLE log_entries_v8 (
    idx       INTEGER PRIMARY KEY,
    leaf      BLOB NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('issuance', 'revocation', 'membership')),
    serial    TEXT NOT NULL,
    identity  TEXT NOT NULL,
    at        BIGINT NOT NULL,
    leaf_hash BLOB
);
INSERT INTO log_entries_v8 (idx, leaf, kind, serial, identity, at, leaf_hash)
    SELECT idx, leaf, kind, serial, identity, at, leaf_hash FROM log_entries ORDER BY idx;
DROP TABLE log_entries;
ALTER TABLE log_entries_v8 RENAME TO log_entries;
CREATE INDEX log_entries_serial ON log_entries (serial);
CREATE INDEX log_entries_identity ON log_entries (identity);
CREATE INDEX log_entries_leaf_hash ON log_entries (leaf_hash);
CREATE INDEX log_entries_at ON log_entries (at);
