-- Which node runs a session's turn, by lease: two nodes never run turns of one session at
-- once, and a node that died lets go when its lease lapses.
CREATE TABLE session_turns (
    agent text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    instance text NOT NULL,
    token text NOT NULL,
    until timestamptz NOT NULL,
    PRIMARY KEY (agent, session_id),
    FOREIGN KEY (agent, session_id) REFERENCES sessions (agent, id) ON DELETE CASCADE
);
