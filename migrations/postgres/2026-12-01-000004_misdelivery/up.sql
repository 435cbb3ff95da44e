-- M1: an undelivered purchase is refunded in full at most once (whichever replica's sweep gets
-- there first); the purchase lock serialises the sweeps, this index is the unique key.
CREATE UNIQUE INDEX refunds_one_misdelivery_idx ON refunds (purchase_id) WHERE reason = 'misdelivery';
-- The sweep looks for undelivered purchases by age (this index also serves lookups by status).
DROP INDEX purchases_status_idx;
CREATE INDEX purchases_status_paid_idx ON purchases (status, paid_at);
-- Linking a Stripe customer to an account looks for that customer's undelivered purchases.
CREATE INDEX purchases_customer_idx ON purchases (stripe_customer_id);
