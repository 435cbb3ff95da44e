DROP INDEX consumptions_account_status_idx;
DROP TABLE refund_request_notes;
DROP TABLE refund_requests;
