-- Release 0.2: answers per sender (rules' sender_answer_limit) are counted from the journal
-- by lower-cased sender and time.
CREATE INDEX journal_by_sender ON journal (lower(sender), decided_at);
