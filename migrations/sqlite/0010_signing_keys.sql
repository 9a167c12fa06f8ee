-- Handover of the CA's Ed25519 signing keys (issue 16): the issuance log's checkpoint key and the
-- membership key. Number 1 of each is the key of initialisation, recorded at start-up (its key
-- stays where init put it: log.key.sealed, ca_meta or the token). A handover begins with the next
-- key `incoming` (published, and for the log co-signing every checkpoint beside the active key)
-- and finishes with it `active` and its predecessor `retired` (its sealed key erased).
-- `handover_checkpoint` keeps, for a log key, the last checkpoint both it and its predecessor
-- signed: a verifier that pins the old key follows the handover through it.
-- `log_state.key_epoch` changes with every step, under the sequencer's lock, so a replica signing
-- a checkpoint notices a step of another replica in the same transaction.
CREATE TABLE signing_keys (
    purpose             TEXT NOT NULL CHECK (purpose IN ('log', 'membership')),
    number              BIGINT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('incoming', 'active', 'retired')),
    public_key          TEXT NOT NULL,
    key_sealed          TEXT,
    handover_checkpoint TEXT,
    created_at          BIGINT NOT NULL,
    changed_at          BIGINT NOT NULL,
    PRIMARY KEY (purpose, number)
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (purpose, state) WHERE state = 'active';
CREATE UNIQUE INDEX signing_keys_one_incoming ON signing_keys (purpose, state) WHERE state = 'incoming';

ALTER TABLE log_state ADD COLUMN key_epoch BIGINT NOT NULL DEFAULT 0;

-- SQLite cannot change a CHECK constraint in place: the log's entries are rebuilt with 'key'
-- among their kinds.
CREATE TABLE log_entries_v10 (
    idx       INTEGER PRIMARY KEY,
    leaf      BLOB NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('issuance', 'revocation', 'membership', 'intermediate', 'key')),
    serial    TEXT NOT NULL,
    identity  TEXT NOT NULL,
    at        BIGINT NOT NULL,
    leaf_hash BLOB
);
INSERT INTO log_entries_v10 (idx, leaf, kind, serial, identity, at, leaf_hash)
    SELECT idx, leaf, kind, serial, identity, at, leaf_hash FROM log_entries ORDER BY idx;
DROP TABLE log_entries;
ALTER TABLE log_entries_v10 RENAME TO log_entries;
CREATE INDEX log_entries_serial ON log_entries (serial);
CREATE INDEX log_entries_identity ON log_entries (identity);
CREATE INDEX log_entries_leaf_hash ON log_entries (leaf_hash);
CREATE INDEX log_entries_at ON log_entries (at);

-- ... and the feed with 'key' among its kinds (a membership key's handover is announced to every
-- node).
CREATE TABLE feed_v10 (
    seq         BIGINT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('membership', 'revocation', 'directory', 'intermediate', 'key')),
    subchain_id TEXT,
    revision    BIGINT,
    serial      TEXT,
    identity_id TEXT,
    reason      TEXT,
    at          BIGINT NOT NULL
);
INSERT INTO feed_v10 SELECT seq, kind, subchain_id, revision, serial, identity_id, reason, at FROM feed;
DROP TABLE feed;
ALTER TABLE feed_v10 RENAME TO feed;
