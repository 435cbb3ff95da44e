DROP TABLE jobs;
DROP TABLE refunds;
