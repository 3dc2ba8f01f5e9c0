#!/usr/bin/env python3
"""show-mailboxes.py IMAP_PORT: what the desks, the helpdesk and the senders see now,
read with plain IMAP (as an officer's mail client would)."""
import email, email.header, imaplib, re, sys, time

port = int(sys.argv[1])
USERS = ["buyer.registration", "seller.registration", "upload.product", "direct.purchase",
         "bid.ra", "order.process", "payment.process", "helpdesk", "outside"]

def dec(v):
    return str(email.header.make_header(email.header.decode_header(v or ""))).replace("\r", " ").replace("\n", " ")

def show(user):
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.login(user, "secret")
    _, boxes = imap.list()
    names = [re.search(rb'"([^"]*)"$', b).group(1).decode() if b.endswith(b'"') else b.split()[-1].decode() for b in boxes]
    lines = []
    for name in sorted(names, key=lambda n: (n != "INBOX", n)):
        typ, data = imap.select(f'"{name}"', readonly=True)
        if typ != "OK" or int(data[0]) == 0:
            continue
        _, msgs = imap.fetch("1:*", "(FLAGS BODY.PEEK[])")
        for item in msgs:
            if not isinstance(item, tuple):
                continue
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode()
            m = email.message_from_bytes(item[1])
            attached = [p.get_payload(0) for p in m.walk() if p.get_content_type() == "message/rfc822"]
            line = f"  {name:11} [{flags}] from {dec(m['From'])}"
            if m["Cc"]:
                line += f", cc {dec(m['Cc'])}"
            line += f": {dec(m['Subject'])[:70]}"
            if attached:
                line += f"\n  {'':11}   attached original: {dec(attached[0]['Subject'])[:60]}"
            lines.append(line)
    imap.logout()
    print(f"{user}@gem.test" + (" (external senders' copies)" if user == "outside" else ""))
    print("\n".join(lines) if lines else "  (empty)")

time.sleep(1)  # let Postfix hand the last redirects to Dovecot
print("== what each mailbox shows now")
for u in USERS:
    show(u)
