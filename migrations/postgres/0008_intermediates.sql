-- Rotation of the issuing intermediate (issue 16): every intermediate the CA has had, a CRL per
-- intermediate, each certificate's issuer, and the intermediate's steps in the log and the feed.
--
-- The intermediate made at initialisation is number 1; its row is written at start-up from
-- intermediate.pem (the database never held its certificate), its key stays where init put it
-- (intermediate.key.sealed or the token). Later ones are made by rotation; their keys are
-- sealed here, so that every replica opens the same key. Under an offline root a new one is
-- `requested` (key made, CSR waiting for the root's signature; no certificate yet) before `next`.
CREATE TABLE issuing_cas (
    number     BIGINT PRIMARY KEY,
    der        BYTEA,
    csr        TEXT,
    key_sealed TEXT,
    state      TEXT NOT NULL CHECK (state IN ('requested', 'next', 'published', 'active', 'retiring', 'retired')),
    created_at BIGINT NOT NULL,
    changed_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX issuing_cas_one_active ON issuing_cas (state) WHERE state = 'active';

-- One CRL per intermediate (the single row of `crl` was the first intermediate's).
CREATE TABLE crls (
    issuer      BIGINT PRIMARY KEY,
    number      BIGINT NOT NULL,
    this_update BIGINT NOT NULL,
    next_update BIGINT NOT NULL,
    der         BYTEA NOT NULL
);
INSERT INTO crls (issuer, number, this_update, next_update, der)
    SELECT 1, number, this_update, next_update, der FROM crl;
DROP TABLE crl;

ALTER TABLE certificates ADD COLUMN issuer BIGINT NOT NULL DEFAULT 1;

ALTER TABLE log_entries DROP CONSTRAINT log_entries_kind_check;
ALTER TABLE log_entries ADD CONSTRAINT log_entries_kind_check
    CHECK (kind IN ('issuance', 'revocation', 'membership', 'intermediate'));
ALTER TABLE feed DROP CONSTRAINT feed_kind_check;
ALTER TABLE feed ADD CONSTRAINT feed_kind_check
    CHECK (kind IN ('membership', 'revocation', 'directory', 'intermediate'));
