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

ALTER TABLE log_entries DROP CONSTRAINT log_entries_kind_check;
ALTER TABLE log_entries ADD CONSTRAINT log_entries_kind_check
    CHECK (kind IN ('issuance', 'revocation', 'membership', 'intermediate', 'key'));
ALTER TABLE feed DROP CONSTRAINT feed_kind_check;
ALTER TABLE feed ADD CONSTRAINT feed_kind_check
    CHECK (kind IN ('membership', 'revocation', 'directory', 'intermediate', 'key'));
