-- The tool calls waiting for a person (ask mode) in every node's running turns, so that any
-- node lists them. A row lives while its wait does and names the instance whose turn waits;
-- rows of an instance whose registration lapsed (a node that died) are not listed, and go
-- with the registration when it is pruned or removed.
CREATE TABLE pending_approvals (
    request_id text COLLATE "C" PRIMARY KEY,
    instance text COLLATE "C" NOT NULL,
    agent text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    doc jsonb NOT NULL,
    FOREIGN KEY (agent, session_id) REFERENCES sessions (agent, id) ON DELETE CASCADE
);
CREATE INDEX pending_approvals_instance ON pending_approvals (instance);
