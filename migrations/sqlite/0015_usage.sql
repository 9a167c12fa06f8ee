-- Usage reports of shared city nodes (issue 14): each node's signed report as received (kept while
-- a usage row refers to it, so every total can be traced to the node's signature), and the
-- totals per node, subchain and hour from the newest report holding them.
CREATE TABLE usage_reports (
    node      TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    at        BIGINT NOT NULL,
    payload   BLOB NOT NULL,
    signature BLOB NOT NULL,
    serial    TEXT NOT NULL,
    received  BIGINT NOT NULL,
    PRIMARY KEY (node, seq)
);

CREATE TABLE usage (
    node          TEXT NOT NULL,
    subchain      TEXT NOT NULL,
    hour          BIGINT NOT NULL,
    transactions  BIGINT NOT NULL,
    bytes_written BIGINT NOT NULL,
    bytes_stored  BIGINT NOT NULL,
    bytes_served  BIGINT NOT NULL,
    refused       BIGINT NOT NULL,
    seq           BIGINT NOT NULL,
    PRIMARY KEY (node, subchain, hour)
);
CREATE INDEX usage_subchain_hour ON usage (subchain, hour);
CREATE INDEX usage_node_seq ON usage (node, seq);
