-- Types are the ones both backends share (docs/architecture.md, "Storage"): TEXT ids, BIGINT money and credits,
-- naive UTC TIMESTAMP, BOOLEAN. Keep this file and ../../sqlite/<same version>/up.sql in step;
-- tests/schema.rs proves they produce the same schema.

CREATE TABLE accounts (
    id                  TEXT PRIMARY KEY,
    email               TEXT,
    stripe_customer_id  TEXT UNIQUE,
    status              TEXT NOT NULL DEFAULT 'active',
    status_reason       TEXT,
    balance             BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at          TIMESTAMP NOT NULL,
    updated_at          TIMESTAMP NOT NULL
);

CREATE TABLE purchases (
    id                  TEXT PRIMARY KEY,
    payment_intent_id   TEXT NOT NULL UNIQUE,
    charge_id           TEXT UNIQUE,
    checkout_session_id TEXT,
    account_id          TEXT REFERENCES accounts (id),
    account_reference   TEXT,
    stripe_customer_id  TEXT,
    package_id          TEXT,
    amount              BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    status              TEXT NOT NULL,
    credits_granted     BIGINT NOT NULL DEFAULT 0,
    undelivered_reason  TEXT,
    paid_at             TIMESTAMP NOT NULL,
    source_event_id     TEXT NOT NULL,
    created_at          TIMESTAMP NOT NULL,
    updated_at          TIMESTAMP NOT NULL
);
CREATE INDEX purchases_account_idx ON purchases (account_id, paid_at);
CREATE INDEX purchases_status_idx ON purchases (status);

-- Which PaymentIntent each charge belongs to, as told by charge.succeeded, so that a charge
-- seen before its purchase is linked when the purchase arrives.
CREATE TABLE stripe_charges (
    charge_id          TEXT PRIMARY KEY,
    payment_intent_id  TEXT NOT NULL,
    created_at         TIMESTAMP NOT NULL
);
CREATE INDEX stripe_charges_payment_intent_idx ON stripe_charges (payment_intent_id);

CREATE TABLE credit_lots (
    id           BIGSERIAL PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    purchase_id  TEXT REFERENCES purchases (id),
    granted      BIGINT NOT NULL CHECK (granted >= 0),
    remaining    BIGINT NOT NULL CHECK (remaining >= 0),
    created_at   TIMESTAMP NOT NULL
);
CREATE INDEX credit_lots_fifo_idx ON credit_lots (account_id, id);
CREATE UNIQUE INDEX credit_lots_purchase_idx ON credit_lots (purchase_id);

CREATE TABLE ledger_entries (
    id             BIGSERIAL PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts (id),
    lot_id         BIGINT NOT NULL REFERENCES credit_lots (id),
    purchase_id    TEXT,
    kind           TEXT NOT NULL,
    delta          BIGINT NOT NULL,
    balance_after  BIGINT NOT NULL,
    reference      TEXT NOT NULL,
    created_at     TIMESTAMP NOT NULL,
    -- Every effect has a unique key: the same cause cannot touch the same lot twice.
    UNIQUE (kind, reference, lot_id)
);
CREATE INDEX ledger_entries_account_idx ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_lot_idx ON ledger_entries (lot_id);

CREATE TABLE consumptions (
    generation_id   TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    credits         BIGINT NOT NULL CHECK (credits > 0),
    status          TEXT NOT NULL,
    balance_after   BIGINT NOT NULL,
    failure_reason  TEXT,
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL
);
CREATE INDEX consumptions_account_idx ON consumptions (account_id, created_at);

CREATE TABLE consumption_draws (
    generation_id  TEXT NOT NULL REFERENCES consumptions (generation_id),
    lot_id         BIGINT NOT NULL REFERENCES credit_lots (id),
    credits        BIGINT NOT NULL CHECK (credits > 0),
    PRIMARY KEY (generation_id, lot_id)
);

CREATE TABLE decisions (
    id           BIGSERIAL PRIMARY KEY,
    subject_type TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    rule         TEXT NOT NULL,
    action       TEXT NOT NULL,
    explanation  TEXT NOT NULL,
    reference    TEXT NOT NULL,
    decided_by   TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL
);
CREATE INDEX decisions_subject_idx ON decisions (subject_type, subject_id);

CREATE TABLE webhook_events (
    id              TEXT PRIMARY KEY,
    event_type      TEXT NOT NULL,
    api_version     TEXT,
    livemode        BOOLEAN NOT NULL,
    stripe_created  TIMESTAMP NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    detail          TEXT,
    attempts        BIGINT NOT NULL DEFAULT 1,
    last_error      TEXT,
    received_at     TIMESTAMP NOT NULL,
    processed_at    TIMESTAMP
);
CREATE INDEX webhook_events_status_idx ON webhook_events (status);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    label       TEXT,
    created_at  TIMESTAMP NOT NULL,
    revoked_at  TIMESTAMP
);
