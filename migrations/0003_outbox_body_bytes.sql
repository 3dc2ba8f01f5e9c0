-- Release 0.3: outgoing mail is stored as bytes (issue #13): base64 text cost a third more
-- space and a copy on every write and read. BYTEA is PostgreSQL's byte string; SQLite takes
-- the name as it is and stores the values as BLOBs. Rows queued before keep their body in
-- body_base64 (read when body is NULL) until they are sent; new rows leave it empty.
ALTER TABLE outbox ADD COLUMN body BYTEA;
