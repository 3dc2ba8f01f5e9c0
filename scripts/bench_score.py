#!/usr/bin/env python3
"""Scores a processed desk mailbox against the ground truth of load.py's --manifest, for
scripts/bench. Prints one JSON object.

Own scorer rather than ../shared/mailstack/score.py because that one only looks at INBOX and
Redirected and only knows imapfilter's keywords: ticketgate files broadcast copies in
"Broadcast" and records the ticket number it found, so it can be checked exactly.

  --mode imap   (imapfilter) every folder of the desk: $Ticket = ticket found, $Broadcast
                = broadcast; a ticket counts as right when present iff the truth has one
                (imapfilter cannot tell which number it matched).
  --mode db     (ticketgate) the state database's journal, by Message-ID: the ticket NUMBER
                must equal the truth, broadcast must match; every mail must be 'done'; and
                the mailbox must show it (every mail carries a ticketgate keyword).
usage: bench_score.py MANIFEST --user U --port 10443 [--mode imap|db] [--db state.db]
"""
import argparse
import imaplib
import json
import re
import sqlite3
import sys

ap = argparse.ArgumentParser()
ap.add_argument("manifest")
ap.add_argument("--user", default="buyer.registration")
ap.add_argument("--port", type=int, default=10143)
ap.add_argument("--mode", choices=["imap", "db"], default="imap")
ap.add_argument("--db")
a = ap.parse_args()

truth = {}
with open(a.manifest) as f:
    for line in f:
        m = json.loads(line)
        truth[m["message_id"]] = m

# What the mailbox shows: message id -> (folder, flags), over every folder.
seen = {}
imap = imaplib.IMAP4("127.0.0.1", a.port)
imap.login(a.user, "secret")
typ, boxes = imap.list()
names = []
for b in boxes or []:
    mm = re.match(rb'\([^)]*\) (?:"[^"]*"|NIL) "?([^"]*)"?$', b)
    if mm:
        names.append(mm.group(1).decode())
for box in names:
    if imap.select('"%s"' % box, readonly=True)[0] != "OK":
        continue
    typ, data = imap.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    for x in data or []:
        if not isinstance(x, tuple):
            continue
        fm = re.search(rb"FLAGS \(([^)]*)\)", x[0])
        flags = fm.group(1).decode().split() if fm else []
        hdr = x[1].decode(errors="replace")
        if ":" not in hdr:
            continue
        seen[hdr.split(":", 1)[1].strip()] = (box, flags)
imap.logout()

decided = {}
if a.mode == "db":
    con = sqlite3.connect("file:%s?mode=ro" % a.db, uri=True)
    for mid, ticket, broadcast, status in con.execute(
            "SELECT message_id, ticket, broadcast, status FROM journal"):
        decided["<%s>" % (mid or "").strip("<>")] = (ticket, bool(broadcast), status)

TG_KEYWORDS = {"$Ticket", "$NoTicket", "$Broadcast", "$Misrouted", "$Automatic", "$Own"}
c = {"total": len(truth), "correct": 0, "ticket_right": 0, "ticket_wrong": 0,
     "broadcast_right": 0, "broadcast_wrong": 0, "not_found": 0, "not_done": 0}
wrong_by_where = {}
for mid, t in truth.items():
    box, flags = seen.get(mid, (None, []))
    if box is None:
        c["not_found"] += 1
    is_bc = t["category"] == "broadcast"
    if a.mode == "db":
        ticket, bc, status = decided.get(mid, (None, False, None))
        if status != "done" or not TG_KEYWORDS.intersection(flags):
            c["not_done"] += 1
        ok_t = ticket == t["ticket"] and status is not None
        ok_b = bc == is_bc and status is not None
    else:
        ok_t = ("$Ticket" in flags) == (t["ticket"] is not None)
        ok_b = ("$Broadcast" in flags) == is_bc
    c["ticket_right" if ok_t else "ticket_wrong"] += 1
    c["broadcast_right" if ok_b else "broadcast_wrong"] += 1
    if ok_t and ok_b:
        c["correct"] += 1
    if not ok_t:
        k = t["where"] or "no-ticket"
        wrong_by_where[k] = wrong_by_where.get(k, 0) + 1
c["accuracy"] = c["correct"] / max(1, c["total"])
c["wrong_by_where"] = wrong_by_where
json.dump(c, sys.stdout)
print()
