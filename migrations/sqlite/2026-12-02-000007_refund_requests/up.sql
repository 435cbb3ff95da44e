-- Refund requests (T2, C1, Q1, L1, R1; D1, M1, V1 and CB4 on request): each one decided by the
-- policy when filed, or queued for a person with a due time (R1).
CREATE TABLE refund_requests (
    id                  TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL REFERENCES accounts (id),
    kind                TEXT NOT NULL,
    purchase_id         TEXT REFERENCES purchases (id),
    generation_id       TEXT,
    category            TEXT,
    feedback            TEXT NOT NULL,
    original_image_url  TEXT,
    result_image_url    TEXT,
    status              TEXT NOT NULL,
    rule                TEXT NOT NULL,
    explanation         TEXT NOT NULL,
    refund_id           TEXT REFERENCES refunds (id),
    credits_returned    BIGINT NOT NULL DEFAULT 0,
    due_at              TIMESTAMP,
    filed_by            TEXT NOT NULL,
    decided_by          TEXT,
    decided_at          TIMESTAMP,
    created_at          TIMESTAMP NOT NULL,
    updated_at          TIMESTAMP NOT NULL
);
-- Q1: one quality request per generation, whatever became of it (the unique key under
-- concurrent submissions). Other kinds may name a generation without using up its one.
CREATE UNIQUE INDEX refund_requests_generation_idx ON refund_requests (generation_id)
    WHERE generation_id IS NOT NULL AND kind = 'quality';
-- One undecided request per purchase and kind (quality requests are one per generation
-- instead): a retried submission does not queue twice.
CREATE UNIQUE INDEX refund_requests_open_purchase_idx ON refund_requests (purchase_id, kind)
    WHERE purchase_id IS NOT NULL AND kind <> 'quality'
      AND status IN ('pending_review', 'needs_info');
-- The queue: oldest due first, by status.
CREATE INDEX refund_requests_queue_idx ON refund_requests (status, due_at);
CREATE INDEX refund_requests_account_idx ON refund_requests (account_id);
-- The feedback report reads a window of filing times.
CREATE INDEX refund_requests_created_idx ON refund_requests (created_at);

-- What was said on a request, in order: the reviewer's questions and notes, the customer's
-- replies.
CREATE TABLE refund_request_notes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  TEXT NOT NULL REFERENCES refund_requests (id),
    kind        TEXT NOT NULL,
    author      TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TIMESTAMP NOT NULL
);
CREATE INDEX refund_request_notes_request_idx ON refund_request_notes (request_id);
-- T2 counts an account's failed generations of the last days.
CREATE INDEX consumptions_account_status_idx ON consumptions (account_id, status, updated_at);
