-- Relayed news too large for a notification's payload (PostgreSQL's 8000 bytes): the row is
-- written in the transaction that notifies its id, so a listener reads it once the
-- notification arrives. Rows are news, not records: each relay removes those older than a
-- few minutes, long after every listening node read them.
CREATE TABLE relayed_news (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    payload text NOT NULL
);
CREATE INDEX relayed_news_at ON relayed_news (at);
