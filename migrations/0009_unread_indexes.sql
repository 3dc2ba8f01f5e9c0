-- Release 0.9: two indexes that every journaled mail or started clock wrote an entry into,
-- at a random place, and that no query needs (issue #16). Together they were about a
-- quarter of the pages a catch-up batch rewrote.
--
-- No query reads the journal by group key: broadcasts are told from the sighting table,
-- whose key starts with it.
DROP INDEX journal_by_group;
-- A batch's ticket mails look their clocks up by the table's key (desk, ticket, started)
-- and keep the open ones; the listing and paging of a desk's open clocks go through the
-- index of 0008 (desk, status, started, ticket).
DROP INDEX desk_clock_by_status;
