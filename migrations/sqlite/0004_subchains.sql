-- Subchains and their membership (DESIGN section 6), and the change feed for ledger nodes.

-- The log learns a third kind of leaf: membership changes.
CREATE TABLE log_entries_v4 (
    idx       BIGINT PRIMARY KEY,
    leaf      BLOB NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('issuance', 'revocation', 'membership')),
    serial    TEXT NOT NULL,
    identity  TEXT NOT NULL,
    at        BIGINT NOT NULL,
    leaf_hash BLOB
);
INSERT INTO log_entries_v4 (idx, leaf, kind, serial, identity, at, leaf_hash)
    SELECT idx, leaf, kind, serial, identity, at, leaf_hash FROM log_entries;
DROP TABLE log_entries;
ALTER TABLE log_entries_v4 RENAME TO log_entries;
CREATE INDEX log_entries_serial ON log_entries (serial);
CREATE INDEX log_entries_identity ON log_entries (identity);
CREATE INDEX log_entries_leaf_hash ON log_entries (leaf_hash);
CREATE INDEX log_entries_at ON log_entries (at);

CREATE TABLE subchains (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    publisher   TEXT NOT NULL REFERENCES identities (id),
    description TEXT NOT NULL,
    policy      TEXT NOT NULL CHECK (policy IN ('open', 'approval')),
    revision    BIGINT NOT NULL,
    members     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX subchains_publisher ON subchains (publisher);

-- The city nodes hosting each subchain (its consenters).
CREATE TABLE subchain_nodes (
    node_id     TEXT NOT NULL REFERENCES identities (id),
    subchain_id TEXT NOT NULL REFERENCES subchains (id),
    PRIMARY KEY (node_id, subchain_id)
);

CREATE TABLE subchain_members (
    subchain_id TEXT NOT NULL REFERENCES subchains (id),
    identity_id TEXT NOT NULL REFERENCES identities (id),
    role        TEXT NOT NULL CHECK (role IN ('reader', 'writer', 'admin')),
    since       BIGINT NOT NULL,
    added_by    TEXT NOT NULL,
    PRIMARY KEY (subchain_id, identity_id)
);
CREATE INDEX subchain_members_identity ON subchain_members (identity_id);

CREATE TABLE join_requests (
    subchain_id  TEXT NOT NULL REFERENCES subchains (id),
    identity_id  TEXT NOT NULL REFERENCES identities (id),
    role         TEXT NOT NULL CHECK (role IN ('reader', 'writer', 'admin')),
    note         TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    PRIMARY KEY (subchain_id, identity_id)
);

-- Every revision's signed statement (payload bytes and Ed25519 signature).
CREATE TABLE subchain_statements (
    subchain_id TEXT NOT NULL REFERENCES subchains (id),
    revision    BIGINT NOT NULL,
    payload     BLOB NOT NULL,
    signature   BLOB NOT NULL,
    log_index   BIGINT NOT NULL,
    PRIMARY KEY (subchain_id, revision)
);

-- The change feed: membership revisions and revocations in commit order. seq is assigned while
-- the issuance log's row is locked (every feed write also appends a log leaf), so it grows in
-- commit order on every replica and a reader never sees a gap fill in behind its cursor.
CREATE TABLE feed (
    seq         BIGINT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('membership', 'revocation')),
    subchain_id TEXT,
    revision    BIGINT,
    serial      TEXT,
    identity_id TEXT,
    reason      TEXT,
    at          BIGINT NOT NULL
);
-- Who may see each event: a node id, or '*' (revocations concern every node). A membership
-- event is seen by the nodes hosting the subchain before and after the change.
CREATE TABLE feed_audience (
    node_id TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    PRIMARY KEY (node_id, seq)
);

-- The CA's membership signing key (Ed25519, sealed like the other CA keys) is kept in ca_meta, so
-- every replica signs with the same key.
