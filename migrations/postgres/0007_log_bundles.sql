-- Full entry bundles of the issuance log (C2SP tlog-tiles `tile/entries/N`: 256 entries, each
-- behind its big-endian u16 length), written in the transaction that appends their last entry,
-- so an auditor's download of a bundle is one row read instead of 256.
CREATE TABLE log_bundles (
    n BIGINT PRIMARY KEY,
    data BYTEA NOT NULL
);
