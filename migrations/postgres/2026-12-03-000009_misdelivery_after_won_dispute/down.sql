DROP INDEX refunds_one_live_misdelivery_idx;
CREATE UNIQUE INDEX refunds_one_misdelivery_idx ON refunds (purchase_id) WHERE reason = 'misdelivery';
