#!/usr/bin/env python3
"""Redirect latency of a running, idling ticketgate, for scripts/bench. Prints one JSON object.

Derived from ../shared/mailstack/bench_latency.py, which times "SMTP accepted -> tagged or
moved" and prints only medians; the issue asks for "SMTP accepted -> the redirect accepted by
the SMTP server", p50 and p99. For each probe (a mail without a ticket, so it is redirected
to the helpdesk):
  t0        our SMTP submission of the probe was accepted (DATA 250)
  idle      an IDLEing connection of our own got "* n EXISTS" for the probe's copy in --watch
            (a mailbox nothing else touches; the probe goes to it too, in the same SMTP
            transaction): the server's own notification delay (Dovecot 2.3: ~500 ms), the floor
            for any IDLE client. Watching the desk INBOX itself is skewed: the daemon's moves
            there restart the server's notification timer of every session on it
  accepted  the daemon's "mail sent" log event for the probe's redirect (logged right after
            the SMTP server answered 250 to its DATA), read from its JSON log (--log)
  delivered the redirect is visible in the helpdesk INBOX (adds Postfix -> LMTP delivery)
usage: bench_latency.py --log daemon.log [--user bid.ra] [--port-offset 300] [-n 60] [--gap 0.2]
"""
import argparse
import imaplib
import json
import smtplib
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

ap = argparse.ArgumentParser()
ap.add_argument("--user", default="bid.ra")
ap.add_argument("--helpdesk", default="helpdesk")
ap.add_argument("--watch", default="bob", help="user whose INBOX our IDLE watcher is on")
ap.add_argument("--port-offset", type=int, default=0)
ap.add_argument("--log", required=True, help="the daemon's stderr with logging.format = json")
ap.add_argument("-n", type=int, default=60)
ap.add_argument("--gap", type=float, default=0.2)
ap.add_argument("--timeout", type=float, default=15)
a = ap.parse_args()
IMAP_PORT = 10143 + a.port_offset
SMTP_PORT = 10025 + a.port_offset

# Our own IDLE watcher on the desk INBOX: the server's notification delay.
idle_evt = []
s = socket.create_connection(("127.0.0.1", IMAP_PORT))
f = s.makefile("rb")
f.readline()
s.sendall(b"a LOGIN %s secret\r\nb SELECT INBOX\r\nc IDLE\r\n" % a.watch.encode())
exists = [0]  # messages in the INBOX as this connection knows it
while True:
    line = f.readline()
    if line.endswith(b"EXISTS\r\n"):
        exists[0] = int(line.split()[1])
    if line.startswith(b"+"):
        break


def watch():
    """Times only EXISTS that announce new mail: the daemon moving probes out of the INBOX
    makes the server send EXPUNGE (and, with it, EXISTS of a smaller count)."""
    while True:
        line = f.readline()
        if not line:
            return
        parts = line.split()
        if len(parts) >= 3 and parts[2] == b"EXPUNGE":
            exists[0] -= 1
        elif len(parts) >= 3 and parts[2] == b"EXISTS":
            n = int(parts[1])
            if n > exists[0]:
                idle_evt.append(time.time())
            exists[0] = n


threading.Thread(target=watch, daemon=True).start()

hd = imaplib.IMAP4("127.0.0.1", IMAP_PORT)
hd.login(a.helpdesk, "secret")
log = open(a.log, "rb")
log_pos = 0


def parse_ts(text):
    """RFC 3339 UTC timestamp of tracing's JSON log (nanoseconds) -> unix seconds."""
    text = text.rstrip("Z")
    if "." in text:
        base, frac = text.split(".", 1)
        text = base + "." + (frac + "000000")[:6]
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def sent_times():
    """recipient addresses of 'mail sent' events -> unix time of the event."""
    global log_pos
    out = {}
    log.seek(log_pos)
    data = log.read()
    end = data.rfind(b"\n") + 1
    log_pos += end
    for line in data[:end].splitlines():
        if b"mail sent" not in line:
            continue
        try:
            ev = json.loads(line)
            for rcpt in str(ev.get("recipients", "")).split(","):
                out.setdefault(rcpt.strip().lower(), parse_ts(ev["timestamp"]))
        except (ValueError, KeyError):
            continue
    return out


res = {"idle": [], "accepted": [], "delivered": []}
sent = {}
for i in range(a.n):
    mid = "<lat-%s@example.org>" % uuid.uuid4().hex[:12]
    msg = ("From: Probe %d <probe%d@example.org>\r\nTo: %s@gem.test\r\nSubject: Latency probe %d, "
           "order not received\r\nMessage-ID: %s\r\nDate: %s\r\n\r\nPlease help, my order is "
           "not delivered.\r\n" % (i, i, a.user, i, mid, time.strftime("%a, %d %b %Y %H:%M:%S +0000",
                                                                      time.gmtime())))
    n_idle = len(idle_evt)
    with smtplib.SMTP("127.0.0.1", SMTP_PORT) as smtp:
        smtp.sendmail("probe%d@example.org" % i, ["%s@gem.test" % a.user, "%s@gem.test" % a.watch], msg)
    t0 = time.time()
    t_acc = t_del = None
    while time.time() - t0 < a.timeout and (t_acc is None or t_del is None):
        if t_acc is None:
            sent.update(sent_times())
            # Each probe has its own sender, who is in Cc of the redirect.
            t_acc = sent.get("probe%d@example.org" % i)
        if t_del is None:
            hd.select("INBOX", readonly=True)
            typ, d = hd.uid("SEARCH", None, "HEADER", "In-Reply-To", mid)
            if d and d[0] and d[0].split():
                t_del = time.time()
        time.sleep(0.002)
    while len(idle_evt) <= n_idle and time.time() - t0 < a.timeout:
        time.sleep(0.002)
    t_idle = idle_evt[n_idle] if len(idle_evt) > n_idle else None
    del idle_evt[n_idle + 1:]
    for k, t in (("idle", t_idle), ("accepted", t_acc), ("delivered", t_del)):
        res[k].append(None if t is None else (t - t0) * 1000)
    time.sleep(a.gap)
s.sendall(b"DONE\r\nz LOGOUT\r\n")
hd.logout()


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, max(0, int(round(p / 100 * len(v) + 0.5)) - 1))]


out = {"n": a.n}
for k, v in res.items():
    ok = [x for x in v if x is not None]
    out[k] = {"n": len(ok), "missing": len(v) - len(ok)}
    if ok:
        out[k].update(p50=round(pct(ok, 50), 1), p99=round(pct(ok, 99), 1),
                      min=round(min(ok), 1), max=round(max(ok), 1))
print(json.dumps(out))
