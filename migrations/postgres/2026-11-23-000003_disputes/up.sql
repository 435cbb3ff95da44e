-- Disputes (rules CB1–CB4): one row per Stripe dispute, with what it did to the ledger and the
-- money it moved, for finance. Keep in step with ../../sqlite/<same version>/up.sql.

CREATE TABLE disputes (
    id                  TEXT PRIMARY KEY,
    purchase_id         TEXT NOT NULL REFERENCES purchases (id),
    account_id          TEXT REFERENCES accounts (id),
    charge_id           TEXT,
    reason              TEXT NOT NULL,
    amount              BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    -- Stripe's latest status (needs_response, under_review, won, lost, warning_closed, …)
    status              TEXT NOT NULL,
    -- set once, when the dispute closes: won | lost | warning_closed | prevented
    outcome             TEXT,
    credits_revoked     BIGINT NOT NULL DEFAULT 0,
    credits_reinstated  BIGINT NOT NULL DEFAULT 0,
    funds_withdrawn     BIGINT NOT NULL DEFAULT 0,
    fees_withdrawn      BIGINT NOT NULL DEFAULT 0,
    funds_reinstated    BIGINT NOT NULL DEFAULT 0,
    fees_reinstated     BIGINT NOT NULL DEFAULT 0,
    -- Stripe's time for the dispute (the event that opened it): CB4 counts by it
    opened_at           TIMESTAMP NOT NULL,
    closed_at           TIMESTAMP,
    created_at          TIMESTAMP NOT NULL,
    updated_at          TIMESTAMP NOT NULL
);
CREATE INDEX disputes_account_idx ON disputes (account_id, opened_at);
CREATE INDEX disputes_purchase_idx ON disputes (purchase_id);
CREATE INDEX disputes_status_idx ON disputes (status);
