-- The CLI's own transcript of each session's conversation, saved after every turn, so that a
-- node that did not run the last turn can restore it into its CLI state and resume.
CREATE TABLE cli_transcripts (
    agent text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    cli_session text NOT NULL,
    body bytea NOT NULL,
    saved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent, session_id),
    FOREIGN KEY (agent, session_id) REFERENCES sessions (agent, id) ON DELETE CASCADE
);
