-- Lets auditors ask for an inclusion proof by leaf hash (RFC 6962 leaf hash, SHA-256(0x00 || leaf)).
ALTER TABLE log_entries ADD COLUMN leaf_hash BLOB;
CREATE INDEX log_entries_leaf_hash ON log_entries (leaf_hash);
CREATE INDEX log_entries_at ON log_entries (at);
