-- Refunds (ours and those made in Stripe's Dashboard) and the durable job queue (outbox) whose
-- workers call Stripe. Keep in step with ../../sqlite/<same version>/up.sql.

CREATE TABLE refunds (
    id                 TEXT PRIMARY KEY,
    purchase_id        TEXT NOT NULL REFERENCES purchases (id),
    amount             BIGINT NOT NULL CHECK (amount >= 0),
    currency           TEXT NOT NULL,
    reason             TEXT NOT NULL,
    rule               TEXT NOT NULL,
    -- 'creditguard' (we asked Stripe) or 'stripe' (made outside creditguard, rule O1)
    origin             TEXT NOT NULL,
    status             TEXT NOT NULL,
    status_detail      TEXT,
    stripe_refund_id   TEXT UNIQUE,
    credits_revoked    BIGINT NOT NULL DEFAULT 0,
    -- O1: credits that should have been revoked but were already spent
    credits_shortfall  BIGINT NOT NULL DEFAULT 0,
    created_at         TIMESTAMP NOT NULL,
    updated_at         TIMESTAMP NOT NULL
);
CREATE INDEX refunds_purchase_idx ON refunds (purchase_id);
CREATE INDEX refunds_status_idx ON refunds (status);

CREATE TABLE jobs (
    id               BIGSERIAL PRIMARY KEY,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    -- sent to Stripe as Idempotency-Key; one job per effect
    idempotency_key  TEXT NOT NULL UNIQUE,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    run_after        TIMESTAMP NOT NULL,
    -- a running job whose lease ran out (its worker died) is claimed again
    locked_until     TIMESTAMP,
    last_error       TEXT,
    trace_context    TEXT,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL
);
CREATE INDEX jobs_ready_idx ON jobs (status, run_after);
