DROP INDEX purchases_customer_idx;
DROP INDEX purchases_status_paid_idx;
CREATE INDEX purchases_status_idx ON purchases (status);
DROP INDEX refunds_one_misdelivery_idx;
