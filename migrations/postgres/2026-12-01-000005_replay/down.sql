DROP TABLE replay_cursors;
ALTER TABLE webhook_events DROP COLUMN source;
