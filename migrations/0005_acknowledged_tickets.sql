-- Release 0.5: tickets learned from the helpdesk's acknowledgement mails (issue #17, the
-- registry's `acknowledgements` source). One row per ticket (the normalised number, as
-- registry lookups key it): when the helpdesk registered it (the acknowledgement's Date,
-- else its INTERNALDATE) and the requester it acknowledged (the acknowledgement's To); an
-- acknowledgement seen again keeps the earliest. Times are Unix seconds.
CREATE TABLE ack_ticket (
    ticket     TEXT   NOT NULL PRIMARY KEY,
    created    BIGINT NOT NULL,
    requester  TEXT,
    learned_at BIGINT NOT NULL
);

-- How far each acknowledgement folder has been read: its UIDVALIDITY and the highest UID
-- learned from. A new UIDVALIDITY reads the folder again from the start.
CREATE TABLE ack_progress (
    folder      TEXT   NOT NULL PRIMARY KEY,
    uidvalidity BIGINT NOT NULL,
    last_uid    BIGINT NOT NULL
);
