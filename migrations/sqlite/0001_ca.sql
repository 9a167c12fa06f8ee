-- The CA's records. Times are Unix seconds; serials are lowercase hex; JSON lists are TEXT.
CREATE TABLE ca_meta (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);

CREATE TABLE identities (
    id                TEXT PRIMARY KEY,
    kind              TEXT NOT NULL CHECK (kind IN ('participant', 'node')),
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

CREATE TABLE certificates (
    serial            TEXT PRIMARY KEY,
    identity_id       TEXT NOT NULL REFERENCES identities (id),
    not_before        BIGINT NOT NULL,
    not_after         BIGINT NOT NULL,
    der               BLOB NOT NULL,
    key_sha256        TEXT NOT NULL,
    issued_at         BIGINT NOT NULL,
    issued_via        TEXT NOT NULL,
    authorized_by     TEXT NOT NULL,
    revoked_at        BIGINT,
    revocation_reason TEXT,
    revoked_by        TEXT
);
CREATE INDEX certificates_identity ON certificates (identity_id);
CREATE INDEX certificates_not_after ON certificates (not_after);
CREATE INDEX certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;

-- The current CRL; one row. Its number only ever grows.
CREATE TABLE crl (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    number      BIGINT NOT NULL,
    this_update BIGINT NOT NULL,
    next_update BIGINT NOT NULL,
    der         BLOB NOT NULL
);
