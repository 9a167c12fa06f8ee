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
    number     BIGINT PRIMARY KEY,
    der        BYTEA NOT NULL,
    cross_der  BYTEA,
    crl        BYTEA,
    key_sealed TEXT,
    key_label  TEXT,
    state      TEXT NOT NULL CHECK (state IN ('published', 'active', 'retiring', 'withdrawn')),
    created_at BIGINT NOT NULL,
    changed_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX roots_one_active ON roots (state) WHERE state = 'active';

ALTER TABLE issuing_cas ADD COLUMN root BIGINT NOT NULL DEFAULT 1;

ALTER TABLE log_entries DROP CONSTRAINT log_entries_kind_check;
ALTER TABLE log_entries ADD CONSTRAINT log_entries_kind_check
    CHECK (kind IN ('issuance', 'revocation', 'membership', 'intermediate', 'key', 'root'));
ALTER TABLE feed DROP CONSTRAINT feed_kind_check;
ALTER TABLE feed ADD CONSTRAINT feed_kind_check
    CHECK (kind IN ('membership', 'revocation', 'directory', 'intermediate', 'key', 'root'));
