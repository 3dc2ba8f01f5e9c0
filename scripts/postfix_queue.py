"""What a mail stack's Postfix still holds, for scripts/demo-deliver.py and scripts/bench.

Postfix takes a mail at once and delivers it to Dovecot over LMTP a moment later (for a
run's thousands of redirects, seconds of both cores): a run started meanwhile would not see
every mail yet, or would share the cores with the deliveries. Not here: the stack itself
(scripts/mailstack/up.sh, down.sh).
"""
import os
import time

# Postfix's queues a mail passes through before it is delivered.
QUEUES = ("maildrop", "incoming", "active", "deferred")


def queued(spool):
    """Mails in the queues under SPOOL (the stack's postfix/spool directory)."""
    return sum(len(files) for d in QUEUES for _, _, files in os.walk(os.path.join(spool, d)))


def wait_until_empty(spool, limit, who):
    """Waits until the queues under SPOOL are empty twice in a row (a mail moving from one
    queue to the next while they are walked is not missed); returns the seconds waited.
    Exits with a message naming WHO after LIMIT seconds."""
    t0 = time.monotonic()
    empty = 0
    while True:
        n = queued(spool)
        empty = empty + 1 if n == 0 else 0
        if empty == 2:
            return time.monotonic() - t0
        if time.monotonic() - t0 > limit:
            raise SystemExit("%s: Postfix still holds %d mails after %g s (%s)" % (who, n, limit, spool))
        time.sleep(0.05 if n == 0 else 0.1)
