-- Shared city nodes (issue 14, DESIGN.md section 12): the resource plans on offer, the plan each
-- subchain chose, and what each city node declared it can give.
--
-- `open` is 1 when publishers choose the plan themselves, 0 when only an administrator assigns it.
-- The defaults are identity::plan::Plan::defaults() (a test holds the two together).
CREATE TABLE plans (
    name       TEXT PRIMARY KEY,
    tenancy    TEXT NOT NULL CHECK (tenancy IN ('shared', 'dedicated')),
    rate       BIGINT NOT NULL,
    burst      BIGINT NOT NULL,
    storage    BIGINT NOT NULL,
    bandwidth  BIGINT NOT NULL,
    open       BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO plans (name, tenancy, rate, burst, storage, bandwidth, open, updated_at) VALUES
    ('free', 'shared', 10, 20, 1073741824, 1000000, 1, 0),
    ('standard', 'shared', 100, 200, 10737418240, 10000000, 1, 0),
    ('business', 'shared', 500, 1000, 107374182400, 50000000, 1, 0),
    ('dedicated', 'dedicated', 2000, 4000, 1099511627776, 200000000, 0, 0);

-- The plan a subchain has, as it was when chosen (JSON of identity::plan::Plan, the same as its
-- statement carries); NULL for subchains made before plans (no quotas until one is chosen).
ALTER TABLE subchains ADD COLUMN plan TEXT;

-- What a city node declared (JSON of identity::plan::Capacity; NULL: it takes no automatically
-- placed subchain), and whether an administrator took it out of service.
ALTER TABLE network_nodes ADD COLUMN capacity TEXT;
ALTER TABLE network_nodes ADD COLUMN draining BIGINT NOT NULL DEFAULT 0;
