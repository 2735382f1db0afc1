-- Orbit's records on PostgreSQL. Ids are ULIDs in Crockford base32 and agent names are ASCII;
-- both sort by bytes ("C"), so id order is age order as in the other stores.
-- Records whose fields are only read and written whole (agents, sessions, tasks, runs) are
-- JSON documents beside the key columns their queries need; the inbox, whose claims are made
-- by statements, has a column per field.

CREATE TABLE orbit_feed (
    id int PRIMARY KEY CHECK (id = 1),
    -- The change feed's identity: a reader's cursor from another database is refused.
    feed text NOT NULL,
    -- Changes up to this sequence number were pruned: a cursor before it is reset.
    pruned_upto bigint NOT NULL DEFAULT 0
);

CREATE TABLE agents (
    name text COLLATE "C" PRIMARY KEY,
    doc jsonb NOT NULL
);

CREATE TABLE sessions (
    agent text COLLATE "C" NOT NULL REFERENCES agents (name) ON DELETE CASCADE,
    id text COLLATE "C" NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (agent, id)
);

CREATE TABLE session_messages (
    agent text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    seq bigserial,
    doc jsonb NOT NULL,
    PRIMARY KEY (agent, session_id, seq),
    FOREIGN KEY (agent, session_id) REFERENCES sessions (agent, id) ON DELETE CASCADE
);

CREATE TABLE inbox (
    agent text COLLATE "C" NOT NULL REFERENCES agents (name) ON DELETE CASCADE,
    id text COLLATE "C" NOT NULL,
    status text NOT NULL,
    from_agent text NOT NULL,
    from_kind text NOT NULL,
    message text NOT NULL,
    message_type text NOT NULL,
    request_id text,
    claimed_by text,
    claimed_at timestamptz,
    deliveries integer NOT NULL DEFAULT 0,
    lease_instance text,
    lease_token text,
    lease_until timestamptz,
    created_at timestamptz NOT NULL,
    read_at timestamptz,
    PRIMARY KEY (agent, id)
);
-- The claimers' queue: pending messages of one agent in age order.
CREATE INDEX inbox_pending ON inbox (agent, id) WHERE status = 'pending';
CREATE INDEX inbox_dead ON inbox (agent, id) WHERE status = 'dead';

CREATE TABLE tasks (
    agent text COLLATE "C" NOT NULL REFERENCES agents (name) ON DELETE CASCADE,
    id text COLLATE "C" NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (agent, id)
);

-- A slot fires once: claiming one inserts it, and the key refuses a second claim.
CREATE TABLE task_slots (
    agent text COLLATE "C" NOT NULL,
    task_id text COLLATE "C" NOT NULL,
    slot timestamptz NOT NULL,
    PRIMARY KEY (agent, task_id, slot),
    FOREIGN KEY (agent, task_id) REFERENCES tasks (agent, id) ON DELETE CASCADE
);

CREATE TABLE runs (
    agent text COLLATE "C" NOT NULL,
    task_id text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    status text NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (agent, task_id, id),
    FOREIGN KEY (agent, task_id) REFERENCES tasks (agent, id) ON DELETE CASCADE
);
CREATE INDEX runs_running ON runs (agent, task_id) WHERE status = 'running';

CREATE TABLE task_changes (
    seq bigserial PRIMARY KEY,
    agent text COLLATE "C" NOT NULL,
    task_id text COLLATE "C" NOT NULL
);

CREATE TABLE instances (
    id text COLLATE "C" PRIMARY KEY,
    until timestamptz NOT NULL,
    doc jsonb NOT NULL
);

CREATE TABLE memory (
    agent text COLLATE "C" NOT NULL REFERENCES agents (name) ON DELETE CASCADE,
    day date NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (agent, day)
);
