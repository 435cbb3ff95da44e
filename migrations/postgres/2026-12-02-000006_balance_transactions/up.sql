-- What Stripe's balance moved for a charge, refund or dispute, with its fee, as the
-- reconciliation's Stripe check read it (GET /v1/balance_transactions). The summary's
-- processing fees and the export's balance-transaction ids come from here.
CREATE TABLE balance_transactions (
    id                  TEXT PRIMARY KEY,
    source              TEXT NOT NULL,
    reporting_category  TEXT,
    amount              BIGINT NOT NULL,
    fee                 BIGINT NOT NULL,
    net                 BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    created             TIMESTAMP NOT NULL,
    fetched_at          TIMESTAMP NOT NULL
);
CREATE INDEX balance_transactions_source_idx ON balance_transactions (source);
