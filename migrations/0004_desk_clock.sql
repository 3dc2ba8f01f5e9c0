-- Release 0.4: the desk's clock (issue #17; seed 000: the desk has 48 hours to resolve).
-- One clock per desk and ticket at a time: started by the first mail on the ticket that the
-- desk keeps (the rules' `clock` action), joined by later mails on it, stopped when an
-- officer answers (\Answered on one of its mails, a reply in the Sent folder, or a mail
-- moved to the done folder). status: 'open' or 'stopped'. overdue_at: when its mails were
-- tagged $Overdue (a clock stopped after it was answered late). Times are Unix seconds.
CREATE TABLE desk_clock (
    desk        TEXT   NOT NULL,
    ticket      TEXT   NOT NULL,
    started     BIGINT NOT NULL,
    due         BIGINT NOT NULL,
    sender      TEXT,
    subject     TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    stopped_at  BIGINT,
    stop_reason TEXT,
    overdue_at  BIGINT,
    PRIMARY KEY (desk, ticket, started)
);
CREATE INDEX desk_clock_by_status ON desk_clock (desk, status);

-- The mails of a clock, by their place in the desk's mailbox (a UIDVALIDITY change adds the
-- mails again under the new one when they are decided again).
CREATE TABLE desk_clock_mail (
    desk        TEXT   NOT NULL,
    uidvalidity BIGINT NOT NULL,
    uid         BIGINT NOT NULL,
    ticket      TEXT   NOT NULL,
    started     BIGINT NOT NULL,
    message_id  TEXT,
    PRIMARY KEY (desk, uidvalidity, uid)
);
CREATE INDEX desk_clock_mail_by_clock ON desk_clock_mail (desk, ticket, started);
