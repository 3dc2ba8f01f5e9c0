-- Release 0.7: a journaled mail's planned actions are one JSON array in its journal row
-- (`journal.actions`) instead of one journal_action row each: a batch of 200 mails wrote
-- about 900 such rows, half of all the rows it wrote (issue #16). Mails journaled before
-- keep `actions` NULL and their journal_action rows, which are still read and pruned.
ALTER TABLE journal ADD COLUMN actions TEXT;
