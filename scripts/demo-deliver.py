#!/usr/bin/env python3
"""demo-deliver.py PORT SPOOL FILE...: submits each .eml over SMTP to its To/Cc recipients
that are desks of the demo (gem.test); files that are not mail are appended to bid.ra's
inbox over IMAP so the demo shows how a broken mail is set aside. Then waits until Postfix's
queue under SPOOL is empty: Postfix takes a mail at once and delivers it to Dovecot a moment
later, and a run started meanwhile would not see every mail yet."""
import email, email.utils, imaplib, smtplib, sys

from postfix_queue import wait_until_empty

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

wait_until_empty(spool, 60, "demo-deliver")
print("  all delivered to the desks' mailboxes")
