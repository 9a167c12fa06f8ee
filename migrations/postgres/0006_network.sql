-- Orderer identities and the node directory (DESIGN section 11).
ALTER TABLE identities DROP CONSTRAINT identities_kind_check;
ALTER TABLE identities ADD CONSTRAINT identities_kind_check CHECK (kind IN ('participant', 'node', 'orderer'));
ALTER TABLE feed DROP CONSTRAINT feed_kind_check;
ALTER TABLE feed ADD CONSTRAINT feed_kind_check CHECK (kind IN ('membership', 'revocation', 'directory'));

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
    payload   BYTEA NOT NULL,
    signature BYTEA NOT NULL,
    at        BIGINT NOT NULL
);
