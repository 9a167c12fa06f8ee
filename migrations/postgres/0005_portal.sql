-- The web portal: self-registered accounts (an identity is created when one is approved),
-- invitation codes, browser sessions and one-time enrollment challenges. Secrets (passwords,
-- session tokens, invitation codes, challenges) are stored only as hashes.
CREATE TABLE accounts (
    identity_id   TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    email         TEXT NOT NULL,
    organisation  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected')),
    created_at    BIGINT NOT NULL,
    decided_by    TEXT,
    decided_at    BIGINT
);
CREATE UNIQUE INDEX accounts_email ON accounts (email);
CREATE INDEX accounts_state ON accounts (state);

CREATE TABLE invitations (
    code_hash  TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    uses_left  BIGINT NOT NULL
);

CREATE TABLE web_sessions (
    token_hash  TEXT PRIMARY KEY,
    identity_id TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

CREATE TABLE enroll_challenges (
    challenge_hash TEXT PRIMARY KEY,
    identity_id    TEXT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used           BIGINT NOT NULL
);
