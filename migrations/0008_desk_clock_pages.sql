-- Release 0.8: the desk clocks' review reads a desk's open clocks in pages, oldest first
-- (ORDER BY started, ticket; the next page after the last one's (started, ticket)), so
-- that its memory does not grow with the number of open clocks (issue #16). Through the
-- new index each page is a range of it; with the index of 0006 every page sorted all the
-- desk's open clocks, and 30,000 of them took three times as long to review.
CREATE INDEX desk_clock_open_by_start ON desk_clock (desk, status, started, ticket);
-- The new index covers the lookup of a batch's tickets among the open clocks (it reads
-- ticket and started only), and SQLite chose it over 0006's index, scanning every open
-- clock of the desk per batch again: 0006's index now covers that lookup too.
DROP INDEX desk_clock_by_status;
CREATE INDEX desk_clock_by_status ON desk_clock (desk, status, ticket, started);
