DROP TABLE balance_transactions;
