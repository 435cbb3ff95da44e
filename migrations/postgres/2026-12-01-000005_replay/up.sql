-- M2: where an event came from: `webhook` (Stripe delivered it, signed) or `replay` (creditguard
-- fetched it from Stripe's Events API because the webhook was missed).
ALTER TABLE webhook_events ADD COLUMN source TEXT NOT NULL DEFAULT 'webhook';

-- The replay sweeper's position, so that a restart resumes where the last sweep ended.
CREATE TABLE replay_cursors (
    name        TEXT PRIMARY KEY,
    position    TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL
);
