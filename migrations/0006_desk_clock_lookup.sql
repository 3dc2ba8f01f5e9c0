-- Release 0.6: the open clock of a desk and ticket is found by an index on all three
-- columns the lookup names (desk, status, ticket). With only (desk, status), SQLite chose
-- that index for `WHERE desk = ? AND ticket = ? AND status = 'open'` and scanned every open
-- clock of the desk for each ticket mail: a backlog of 10,000 mails took twice as long
-- (issue #16, scripts/bench). The new index serves the listing of a desk's open clocks too.
DROP INDEX desk_clock_by_status;
CREATE INDEX desk_clock_by_status ON desk_clock (desk, status, ticket);
