-- M1: at most one live refund in full per undelivered purchase. One that Stripe refused (the
-- charge was disputed then) no longer bars another once the purchase is undelivered again, for
-- instance after the dispute was won.
DROP INDEX refunds_one_misdelivery_idx;
CREATE UNIQUE INDEX refunds_one_live_misdelivery_idx ON refunds (purchase_id)
    WHERE reason = 'misdelivery' AND status IN ('pending', 'submitted', 'succeeded');
