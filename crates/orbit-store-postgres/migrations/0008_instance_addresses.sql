-- Where each node's API is reached (`--advertise-url`), so that a node asked to watch a turn
-- another node runs forwards the watcher there. The registration's document carries it too,
-- as it carries every field the nodes read; the column says it to an operator's SQL (which
-- node is reached where) without reading JSON. Null for a node that cannot say, and for
-- registrations made before this version.
ALTER TABLE instances ADD COLUMN address text;
