DROP TABLE idempotency_records;
DROP TABLE messages;
DROP TABLE sessions;
