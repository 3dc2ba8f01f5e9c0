#!/usr/bin/env bash
# scripts/box-test.sh: the Debian package under a real systemd (issue #14). Builds the .deb
# (scripts/package-deb, lintian included), boots a throw-away copy of
# ../shared/systemd-box (Debian 12, systemd as PID 1), installs the package there, and
# checks what a sysadmin would check, against the project's mail stack (Dovecot + Postfix,
# scripts/mailstack/up.sh) on the host's loopback, which the box shares:
#   install (not enabled, config 0644, credentials 0700, user and group ticketgate) -> the untouched template refuses
#   to start (exit 78, each placeholder in the journal, no restart) -> filled in: enable
#   --now, active (running), STATUS= -> a mail without a ticket redirected to the helpdesk
#   -> journal fields (DESK=bid-ra) -> `report` as a non-root member of the group (and refused
#   to an outsider, naming the database) -> good reload -> bad reload fails, old rules keep
#   working -> kill -9, restarted by systemd -> upgrade restarts it -> systemd-analyze
#   security OK -> stop -> purge removes the state; promtool checks the alert rules and the
#   daemon's /metrics, and a real Prometheus (Debian's) scrapes it.
# Prints PASS/FAIL per check and the time of each phase; exits 1 if any check failed.
# Needs root. Under CI=true a box that cannot boot is a failure, not a skip.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
B=$(readlink -f ../shared/systemd-box/box.sh)
export BOX_NAME=${BOX_NAME:-testbox} BOX_EPHEMERAL=1
OFFSET=600                                   # mail stack ports: IMAP 10743, SMTP 10625
IMAP=$((10143 + OFFSET)) SMTP=$((10025 + OFFSET))
METRICS=127.0.0.1:19787
STACK=/tmp/ticketgate-boxtest-stack
# Every stack account's password and the desks' credentials: distinctive, so that a leak into
# any output is found by scripts/test (which reads it here); "secret" is in real mail.
TEST_PASSWORD='tg-Box-5e2a70'
fail=0 t0=$(date +%s.%N) tp=$t0
check() { if "$@"; then echo "PASS: $*"; else echo "FAIL: $*"; fail=1; fi; }
phase() { local n; n=$(date +%s.%N); awk -v a="$tp" -v b="$n" -v w="$1" 'BEGIN{printf "-- %-34s %5.1f s\n", w, b-a}'; tp=$n; }
die() { echo "FAIL: $*"; finish 1; }
box() { "$B" run "$@"; }
# Polls CMD (run in the box) until it succeeds or SECONDS pass.
until_box() { local secs=$1; shift; local end=$((SECONDS + secs)); until box sh -c "$*" >/dev/null 2>&1; do
  [ $SECONDS -ge $end ] && return 1; sleep 0.2; done; }
finish() {
  "$B" down >/dev/null 2>&1
  scripts/mailstack/down.sh "$STACK" --fast --purge >/dev/null 2>&1
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "box test: %.1f s in all\n", b-a}'
  exit "${1:-$fail}"
}
trap 'finish 1' INT TERM

if [ "$(id -u)" != 0 ]; then
  [ "${CI:-}" = true ] && die "needs root (systemd-nspawn) and CI=true: cannot skip"
  echo "box-test: SKIPPED, needs root"; exit 0
fi
[ -x "$B" ] || die "no systemd box at ../shared/systemd-box/box.sh"

scripts/package-deb > /tmp/ticketgate-box-package.log 2>&1 || { tail -30 /tmp/ticketgate-box-package.log; die "scripts/package-deb failed"; }
DEB=$(ls -t "${CARGO_TARGET_DIR:-target}"/debian/ticketgate_*.deb | head -n1)
grep -E '^(E|W):' /tmp/ticketgate-box-package.log | sed 's/^/lintian: /'
phase "build .deb + lintian"

MAILSTACK_PORT_OFFSET=$OFFSET MAILSTACK_PASSWORD=$TEST_PASSWORD scripts/mailstack/up.sh "$STACK" >/dev/null || die "mail stack did not start"
"$B" down >/dev/null 2>&1   # a box left running by an earlier, killed run
"$B" up >/dev/null || die "the systemd box did not boot (see /run/systemd-box/$BOX_NAME/console.log)"
phase "mail stack + box up"

# --- install ---------------------------------------------------------------------------
"$B" cp "$DEB" /root/ticketgate.deb
box apt-get install -y -q /root/ticketgate.deb > /tmp/ticketgate-box-apt.log 2>&1 || { cat /tmp/ticketgate-box-apt.log; die "apt-get install failed"; }
check box test -x /usr/bin/ticketgate
check box sh -c '! systemctl is-enabled --quiet ticketgate && ! systemctl is-active --quiet ticketgate'
check box sh -c '[ "$(stat -c %a /etc/ticketgate/config.toml)" = 644 ] && [ "$(stat -c %a /etc/ticketgate/credentials)" = 700 ]'
check box sh -c 'getent passwd ticketgate && getent group ticketgate'
check box sh -c 'man -w ticketgate >/dev/null 2>&1 || test -s /usr/share/man/man1/ticketgate.1.gz'
check box test -s /usr/share/bash-completion/completions/ticketgate
phase "apt-get install"

# --- the untouched template: refused once, no restart loop -------------------------------
box systemctl start ticketgate >/dev/null 2>&1
check box sh -c '[ "$(systemctl show -P ExecMainStatus ticketgate)" = 78 ] && systemctl is-failed --quiet ticketgate'
box journalctl -u ticketgate -b --no-pager -o cat | grep -E 'placeholder|problem' | sed 's/^/journal: /'
check box sh -c 'journalctl -u ticketgate -b -o cat | grep -q "config.toml:[0-9]*:[0-9]*: \[imap\] host is still the template.s placeholder"'
check box sh -c 'journalctl -u ticketgate -b -o cat | grep -q "config.toml:[0-9]*:[0-9]*: \[smtp\] host is still the template.s placeholder"'
check box sh -c 'journalctl -u ticketgate -b -p err -o cat | grep -q "\[imap\] host is still the template.s placeholder"'
# RestartSec=5s: a restart loop would have started it again within this window.
sleep 6.5
check box sh -c '[ "$(systemctl show -P NRestarts ticketgate)" = 0 ] && systemctl is-failed --quiet ticketgate'
box systemctl reset-failed ticketgate
phase "template refused (observed 6.5 s)"

# --- configure as the admin does: servers, addresses, CA, passwords ----------------------
"$B" cp "$STACK/tls/ca.pem" /etc/ticketgate/ca.pem
box sh -c "chmod 644 /etc/ticketgate/ca.pem && cd /etc/ticketgate && sed -i \
  -e 's|^host = \"CHANGE-ME: the IMAP.*|host = \"127.0.0.1\"\nport = $IMAP\nca_file = \"/etc/ticketgate/ca.pem\"|' \
  -e 's|^host = \"CHANGE-ME: the SMTP.*|host = \"127.0.0.1\"\nca_file = \"/etc/ticketgate/ca.pem\"|' \
  -e 's|^port = 587|port = $SMTP|' -e 's|^security = \"tls\"|security = \"starttls\"|' \
  -e 's|@gem.gov.in|@gem.test|g' -e 's|helpdesk-gem@gov.in|helpdesk@gem.test|' \
  -e 's|^# \[metrics\]|[metrics]|' -e 's|^# listen = .*|listen = \"$METRICS\"|' config.toml"
for u in buyer.registration seller.registration upload.product direct.purchase bid.ra order.process payment.process; do
  box sh -c "umask 077; printf %s '$TEST_PASSWORD' > /etc/ticketgate/credentials/$u"
done
# A function, so that the PASS/FAIL line names the check, not the password.
no_password_in_config() { box sh -c "! grep -rqF '$TEST_PASSWORD' /etc/ticketgate/config.toml"; }
check no_password_in_config
check box systemd-run --wait --pipe -q -p LoadCredential=password:/etc/ticketgate/credentials ticketgate check --connect
phase "configure"

# --- enable, start, status -------------------------------------------------------------
check box systemctl enable --now ticketgate
check box systemctl is-active --quiet ticketgate
check until_box 30 'systemctl show -P StatusText ticketgate | grep -q "^7/7 desks connected"'
box systemctl status ticketgate --no-pager -n 5 | sed 's/^/status: /'
check box sh -c 'systemctl status ticketgate --no-pager | grep -q "Active: active (running)"'
check box sh -c 'systemctl status ticketgate --no-pager | grep -q "Status: \"7/7 desks connected"'
check box sh -c '[ "$(stat -c %a:%U:%G /var/lib/ticketgate/state.db)" = 640:ticketgate:ticketgate ] && [ ! -L /var/lib/ticketgate ]'
check box sh -c '[ "$(stat -c %a /var/lib/ticketgate)" = 750 ]'
check box sh -c 'ps -o user= -p "$(systemctl show -P MainPID ticketgate)" | grep -q ticketgate'
phase "enable --now until 7/7 connected"

# --- a mail end to end -----------------------------------------------------------------
send() {  # SUBJECT BODY: from a user to bid.ra, through the stack's SMTP
  python3 - "$SMTP" "$1" "$2" <<'PY'
import smtplib, sys, email.message, email.utils
m = email.message.EmailMessage()
m["From"] = "Meena Iyer <meena.iyer@example.in>"; m["To"] = "bid.ra@gem.test"
m["Subject"] = sys.argv[2]; m["Message-ID"] = email.utils.make_msgid(domain="example.in")
m["Date"] = email.utils.formatdate(); m.set_content(sys.argv[3])
with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s: s.send_message(m)
PY
}
in_helpdesk() {  # SUBJECT-PART: polls helpdesk's INBOX for 60 s
  python3 - "$IMAP" "$1" "$TEST_PASSWORD" <<'PY'
import imaplib, sys, time
end = time.time() + 60
while time.time() < end:
    i = imaplib.IMAP4("127.0.0.1", int(sys.argv[1])); i.login("helpdesk", sys.argv[3]); i.select("INBOX", readonly=True)
    typ, data = i.search(None, "SUBJECT", '"%s"' % sys.argv[2]); i.logout()
    if data[0].split(): sys.exit(0)
    time.sleep(0.2)
sys.exit(1)
PY
}
send "Bid GEM/2024/B/1234567 corrigendum query" "Please tell me when the corrigendum comes."
check in_helpdesk "[No CRM ticket] Bid GEM/2024/B/1234567"
check until_box 20 'journalctl -u ticketgate -b DESK=bid-ra -o cat | grep -q "redirect"'
box journalctl -u ticketgate -b DESK=bid-ra --no-pager -o cat | tail -2 | sed 's/^/journal DESK=bid-ra: /'
check box sh -c 'journalctl -u ticketgate -b DESK=bid-ra -o verbose | grep -q "ACTIONS=redirect:helpdesk tag:\$NoTicket"'
check box sh -c '! journalctl -u ticketgate -b DESK=payment-process -o cat | grep -q "corrigendum"'
check until_box 10 'systemctl show -P StatusText ticketgate | grep -q "1 mails handled, 1 sent"'
check box bash -c "exec 3<>/dev/tcp/${METRICS%:*}/${METRICS#*:}; printf 'GET /health HTTP/1.0\r\n\r\n' >&3; head -1 <&3 | grep -q 200"
phase "mail redirected end to end"

# --- a supervisor without root: a member of the ticketgate group reads the report ----------
box sh -c 'useradd -m -G ticketgate supervisor && useradd -m outsider'
box runuser -u supervisor -- ticketgate report --format csv > /tmp/ticketgate-box-report.csv 2>&1
sed 's/^/report (supervisor): /' /tmp/ticketgate-box-report.csv | head -4
check grep -qE '^[0-9-]+,bid-ra,1,' /tmp/ticketgate-box-report.csv
box runuser -u outsider -- ticketgate report > /tmp/ticketgate-box-report-outsider.txt 2>&1; rc=$?
sed 's/^/report (outsider): /' /tmp/ticketgate-box-report-outsider.txt
check [ "$rc" != 0 ]
check grep -q '/var/lib/ticketgate/state.db' /tmp/ticketgate-box-report-outsider.txt
phase "report as a non-root supervisor"

# --- monitoring: promtool on the alert rules and on /metrics; a real Prometheus scrape ----
check promtool check rules packaging/prometheus/ticketgate-alerts.yml
python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://$METRICS/metrics').read().decode())" > /tmp/ticketgate-box-metrics.txt
check promtool check metrics < /tmp/ticketgate-box-metrics.txt
check grep -q '^process_resident_memory_bytes [0-9]' /tmp/ticketgate-box-metrics.txt
# Every metric the alert rules and the Grafana dashboard query is one the daemon exposes.
used=$(grep -ohE '\b(ticketgate|process)_[a-z_]+' packaging/prometheus/ticketgate-alerts.yml packaging/prometheus/ticketgate-dashboard.json | sort -u)
missing=$(for m in $used; do grep -q "^$m[{ ]" /tmp/ticketgate-box-metrics.txt || echo "$m"; done)
check [ -z "$missing" ]
[ -n "$missing" ] && echo "not exposed: $missing"
check python3 -c "import json; d = json.load(open('packaging/prometheus/ticketgate-dashboard.json')); assert d['panels']"
P=$(mktemp -d)
printf 'global:\n  scrape_interval: 1s\nrule_files: ["%s"]\nscrape_configs:\n  - job_name: ticketgate\n    static_configs:\n      - targets: ["%s"]\n' \
  "$ROOT/packaging/prometheus/ticketgate-alerts.yml" "$METRICS" > "$P/prometheus.yml"
prometheus --config.file="$P/prometheus.yml" --storage.tsdb.path="$P/data" --web.listen-address=127.0.0.1:19790 > "$P/log" 2>&1 & ppid=$!
scraped() { python3 - "$1" <<'PY'
import json, sys, time, urllib.parse, urllib.request
end = time.time() + 30
while time.time() < end:
    try:
        q = urllib.parse.quote(sys.argv[1])
        r = json.load(urllib.request.urlopen("http://127.0.0.1:19790/api/v1/query?query=" + q))
        if r["data"]["result"] and r["data"]["result"][0]["value"][1] == "1":
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
}
check scraped 'up{job="ticketgate"}'
check scraped 'ticketgate_desk_connected{desk="bid-ra"}'
check scraped 'ticketgate_mails_seen_total{desk="bid-ra"}'
kill "$ppid"; wait "$ppid" 2>/dev/null; rm -rf "$P"
phase "promtool, Prometheus scrape"

# --- reloads -----------------------------------------------------------------------------
pid=$(box systemctl show -P MainPID ticketgate)
box sh -c 'cp /etc/ticketgate/rules/gem.toml /root/gem.toml.good && printf "\n# reviewed\n" >> /etc/ticketgate/rules/gem.toml'
box systemctl reload ticketgate || { echo "FAIL: good reload"; fail=1; box journalctl -u ticketgate -b -n 12 --no-pager | sed 's/^/journal: /'; }
check until_box 10 'journalctl -u ticketgate -b -o cat | grep -q "config and rules reloaded"'
box sh -c 'printf "\n[[rule]]\nname = \"broken\"\nwhen = { no_such_fact = true }\nactions = [\"tag:\$X\"]\n" >> /etc/ticketgate/rules/gem.toml'
box systemctl reload ticketgate > /tmp/ticketgate-box-reload.log 2>&1; rc=$?
sed 's/^/reload: /' /tmp/ticketgate-box-reload.log
check [ "$rc" != 0 ]
box journalctl -u ticketgate -b -o cat | grep "refused" | tail -2 | sed 's/^/journal: /'
check box sh -c 'journalctl -u ticketgate -b -o cat | grep -q "reload 2 refused: /etc/ticketgate/rules/gem.toml:[0-9]*:[0-9]*:"'
check box sh -c 'systemctl show -P StatusText ticketgate | grep -q "last reload REFUSED"'
check box systemctl is-active --quiet ticketgate
check [ "$(box systemctl show -P MainPID ticketgate)" = "$pid" ]
send "Payment query without a number" "Where is my payment?"
check in_helpdesk "[No CRM ticket] Payment query without a number"
box sh -c 'cp /root/gem.toml.good /etc/ticketgate/rules/gem.toml'
check box systemctl reload ticketgate
phase "good reload, bad reload"

# --- kill -9: restarted by systemd --------------------------------------------------------
box kill -9 "$pid"
check until_box 30 "[ \"\$(systemctl show -P NRestarts ticketgate)\" = 1 ] && systemctl is-active --quiet ticketgate"
check until_box 30 'systemctl show -P StatusText ticketgate | grep -q "^7/7 desks connected"'
box journalctl -u ticketgate -b --no-pager -o cat | grep -E "Main process exited|Scheduled restart" | tail -2 | sed 's/^/journal: /'
phase "kill -9 -> restarted"

# --- upgrade (same package again): the running service restarts --------------------------
pid=$(box systemctl show -P MainPID ticketgate)
check box apt-get install -y -q --reinstall /root/ticketgate.deb
check until_box 30 "systemctl is-active --quiet ticketgate && [ \"\$(systemctl show -P MainPID ticketgate)\" != $pid ]"
check box grep -q "^port = $IMAP" /etc/ticketgate/config.toml   # the admin's edits survive
phase "upgrade restarts"

# --- hardening, stop, purge ---------------------------------------------------------------
sec=$(box systemd-analyze security ticketgate --no-pager | tail -1)
echo "security: $sec"
check awk -v l="$sec" 'BEGIN { n = split(l, w, " "); for (i = 1; i <= n; i++) if (w[i] ~ /^[0-9.]+$/) s = w[i]; exit !(s != "" && s + 0 <= 4.0) }'
check box systemctl stop ticketgate
check box sh -c '! systemctl is-active --quiet ticketgate && journalctl -u ticketgate -b -o cat | tail -5 | grep -q stopped'
box apt-get purge -y -q ticketgate > /tmp/ticketgate-box-purge.log 2>&1
grep ticketgate: /tmp/ticketgate-box-purge.log | sed 's/^/purge: /'
check box sh -c '! test -e /var/lib/private/ticketgate && ! test -e /var/lib/ticketgate && ! test -e /etc/ticketgate/config.toml && ! test -e /usr/lib/systemd/system/ticketgate.service'
check box sh -c '! systemctl list-units --all --failed --no-legend | grep -q ticketgate'
phase "security, stop, purge"

if [ $fail = 0 ]; then echo "box test: ALL PASSED"; else echo "box test: SOME FAILED"; fi
finish "$fail"
