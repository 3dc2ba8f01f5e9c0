-- ticketgate state, portable between SQLite and PostgreSQL (used through sqlx's Any driver):
-- only BIGINT and TEXT columns, natural text keys, no AUTOINCREMENT/SERIAL, no BLOB/BYTEA
-- (outgoing mail is stored base64-encoded in TEXT). Booleans are BIGINT 0/1. Times are Unix
-- seconds (UTC).

-- Per desk: the mailbox's UIDVALIDITY and the highest UID that is finished (done or set aside).
CREATE TABLE desk_progress (
    desk        TEXT   NOT NULL PRIMARY KEY,
    uidvalidity BIGINT NOT NULL,
    last_uid    BIGINT NOT NULL
);

-- One row per mail acted on: the decision, recorded before any side effect.
-- status: 'decided' (actions may be outstanding), 'done', 'failed' (set aside, see error).
CREATE TABLE journal (
    desk          TEXT   NOT NULL,
    uidvalidity   BIGINT NOT NULL,
    uid           BIGINT NOT NULL,
    status        TEXT   NOT NULL,
    group_key     TEXT   NOT NULL,
    message_id    TEXT,
    sender        TEXT,
    subject       TEXT   NOT NULL,
    ticket        TEXT,
    ticket_source TEXT,
    broadcast     BIGINT NOT NULL,
    automatic     BIGINT NOT NULL,
    redirected    BIGINT NOT NULL,
    rule          TEXT,
    error         TEXT,
    decided_at    BIGINT NOT NULL,
    finished_at   BIGINT,
    PRIMARY KEY (desk, uidvalidity, uid)
);
CREATE INDEX journal_by_group ON journal (desk, group_key);
CREATE INDEX journal_by_time ON journal (decided_at);

-- The planned actions of a journaled mail, in order, each with its done flag.
CREATE TABLE journal_action (
    desk        TEXT   NOT NULL,
    uidvalidity BIGINT NOT NULL,
    uid         BIGINT NOT NULL,
    position    BIGINT NOT NULL,
    action      TEXT   NOT NULL,
    done        BIGINT NOT NULL,
    PRIMARY KEY (desk, uidvalidity, uid, position)
);

-- Where copies of one message (same group key: Message-ID, else content hash) were seen.
CREATE TABLE sighting (
    group_key   TEXT   NOT NULL,
    desk        TEXT   NOT NULL,
    uidvalidity BIGINT NOT NULL,
    uid         BIGINT NOT NULL,
    seen_at     BIGINT NOT NULL,
    PRIMARY KEY (group_key, desk, uidvalidity, uid)
);
CREATE INDEX sighting_by_time ON sighting (seen_at);

-- Last automatic reply per sender (lower-cased) and rule, for "at most once per period".
CREATE TABLE reply_ledger (
    sender     TEXT   NOT NULL,
    rule       TEXT   NOT NULL,
    replied_at BIGINT NOT NULL,
    outbox_id  TEXT   NOT NULL,
    PRIMARY KEY (sender, rule)
);

-- Durable queue of outgoing mail. The id is the caller's dedupe key.
-- status: 'pending', 'sent' (body cleared), 'failed' (permanent; body kept for inspection).
-- mail_*: the journaled mail whose decision queued this row.
CREATE TABLE outbox (
    id               TEXT   NOT NULL PRIMARY KEY,
    desk             TEXT   NOT NULL,
    envelope_from    TEXT   NOT NULL,
    recipients       TEXT   NOT NULL,
    body_base64      TEXT   NOT NULL,
    status           TEXT   NOT NULL,
    attempts         BIGINT NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    mail_desk        TEXT   NOT NULL,
    mail_uidvalidity BIGINT NOT NULL,
    mail_uid         BIGINT NOT NULL
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_by_mail ON outbox (mail_desk, mail_uidvalidity, mail_uid);
