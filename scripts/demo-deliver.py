#!/usr/bin/env python3
"""demo-deliver.py PORT SPOOL FILE...: submits each .eml over SMTP to its To/Cc recipients
that are desks of the demo (gem.test); files that are not mail are appended to bid.ra's
inbox over IMAP so the demo shows how a broken mail is set aside. Then waits until Postfix's
queue under SPOOL is empty: Postfix takes a mail at once and delivers it to Dovecot a moment
later, and a run started meanwhile would not see every mail yet."""
import email, email.utils, imaplib, os, smtplib, sys, time


def queued(spool):
    return sum(len(files) for d in ("maildrop", "incoming", "active", "deferred")
               for _, _, files in os.walk(os.path.join(spool, d)))


port, spool = int(sys.argv[1]), sys.argv[2]
with smtplib.SMTP("127.0.0.1", port) as smtp:
    for path in sys.argv[3:]:
        raw = open(path, "rb").read()
        msg = email.message_from_bytes(raw)
        rcpts = [a for _, a in email.utils.getaddresses(msg.get_all("To", []) + msg.get_all("Cc", [])) if a.endswith("@gem.test")]
        sender = email.utils.parseaddr(msg.get("From", ""))[1] or "unknown@example.in"
        if not rcpts:
            imap = imaplib.IMAP4("127.0.0.1", port + 118)
            imap.login("bid.ra", "secret")
            imap.append("INBOX", None, None, raw)
            imap.logout()
            print(f"  {path}: appended to bid.ra (not a mail)")
            continue
        smtp.sendmail(sender, rcpts, raw)
        print(f"  {path}: {sender} -> {', '.join(rcpts)}")

# Empty twice in a row: a mail moving from one queue to the next is not missed.
deadline, empty = time.monotonic() + 60, 0
while empty < 2:
    empty = empty + 1 if queued(spool) == 0 else 0
    if time.monotonic() > deadline:
        sys.exit("demo-deliver: Postfix still holds %d mails after 60 s (see %s)" % (queued(spool), spool))
    time.sleep(0.05)
print("  all delivered to the desks' mailboxes")
