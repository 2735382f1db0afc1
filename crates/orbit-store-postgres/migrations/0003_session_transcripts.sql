-- Orbit's transcript of each session: every entry of every turn, in the order appended. A
-- turn's entries are inserted in one transaction, so a reader sees a turn whole or not at all.
CREATE TABLE session_transcripts (
    agent text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    seq bigserial,
    entry jsonb NOT NULL,
    PRIMARY KEY (agent, session_id, seq),
    FOREIGN KEY (agent, session_id) REFERENCES sessions (agent, id) ON DELETE CASCADE
);
