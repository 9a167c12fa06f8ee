-- How far each node has durably processed the change feed, as it reports it
-- (`POST /api/v1/feed/ack`): activating a new issuing intermediate waits until every node that
-- reported recently has seen it published (issue 16).
CREATE TABLE feed_acks (
    node_id TEXT PRIMARY KEY,
    seq     BIGINT NOT NULL,
    at      BIGINT NOT NULL
);
