-- An abort asked through another node, kept against the turn's hold: the node holding the
-- turn learns it at its next renewal even when the notification that asks it is lost.
ALTER TABLE session_turns ADD COLUMN abort_requested boolean NOT NULL DEFAULT false;
