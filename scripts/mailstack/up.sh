#!/usr/bin/env bash
# up.sh [STATE_DIR] -- start a self-contained loopback mail stack:
#   Dovecot 2.3 (IMAP 10143 plain+STARTTLS, IMAPS 10993, LMTP unix socket + 127.0.0.1:10024)
#   Postfix 3.7 (SMTP 127.0.0.1:10025 plain+STARTTLS+AUTH, SMTPS 127.0.0.1:10465) -> LMTP -> Dovecot
# Domain gem.test; every user's password is "secret" (MAILSTACK_PASSWORD sets another).
# Nothing under /etc is read or written.
# Idempotent: if both daemons are already running from STATE_DIR it only re-checks the ports.
# Env: MAILSTACK_IMAP_CAPABILITY="+XFOO" or a full list (e.g. "IMAP4rev1 LITERAL+ UIDPLUS")
#      overrides Dovecot's advertised imap_capability (a change is applied by SIGHUP-reloading
#      Dovecot; only new connections see it; unadvertised commands still work server-side).
#      MAILSTACK_FSYNC=optimized|always|never (default never: test stack, speed over durability)
#      MAILSTACK_IDLE_NOTIFY="1 secs" sets Dovecot's IDLE keepalive interval (default 2 mins).
#      MAILSTACK_NAMESPACE_PREFIX=INBOX. MAILSTACK_SEPARATOR=. : a Courier/Cyrus-style personal
#      namespace (folders live under INBOX.; default: no prefix, separator /).
#      MAILSTACK_USERS="extra1 extra2" adds users.
#      MAILSTACK_MAX_USERIP_CONNECTIONS=N caps each user's IMAP connections from one address
#      (Dovecot's mail_max_userip_connections; default 100).
#      MAILSTACK_PORT_OFFSET=N adds N to every port (a second stack needs its own STATE_DIR too).
# Needs root and: scripts/install-deps.sh (dovecot-imapd dovecot-lmtpd postfix openssl)
# Project copy of the loopback stack used by the tests, the demo and the benchmarks.
set -euo pipefail

S=${1:-${MAILSTACK_DIR:-/tmp/mailstack}}
case $S in /*) ;; *) S=$PWD/$S ;; esac
DOMAIN=gem.test
O=${MAILSTACK_PORT_OFFSET:-0}   # run several stacks side by side: different STATE_DIR + offset
IMAP_PORT=$((10143+O)) IMAPS_PORT=$((10993+O)) LMTP_PORT=$((10024+O)) SMTP_PORT=$((10025+O)) SMTPS_PORT=$((10465+O))
USERS="buyer.registration seller.registration upload.product direct.purchase bid.ra order.process payment.process helpdesk alice bob outside ${MAILSTACK_USERS:-}"
CAP=${MAILSTACK_IMAP_CAPABILITY:-}
FSYNC=${MAILSTACK_FSYNC:-never}
t0=$(date +%s%N)

die() { echo "up.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (postfix master and dovecot master need it)"
for b in dovecot postfix postconf openssl; do command -v $b >/dev/null || die "missing $b (apt-get install dovecot-imapd dovecot-lmtpd dovecot-sieve postfix)"; done

# pid file names a live (non-zombie) process
alive() { local p; [ -s "$1" ] && p=$(head -n1 "$1" | tr -d ' ') && kill -0 "$p" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]; }
# wait for LISTEN sockets by reading /proc/net/tcp (one awk per round for all ports) instead of
# connecting: probe connections only add noise to the logs, and `ss` needs iproute2
missing_ports() { awk -v want="$*" 'BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) need[sprintf(":%04X", w[i])] = w[i] }
  $4 == "0A" { delete need[substr($2, length($2) - 4)] } END { for (k in need) printf "%s ", need[k] }' /proc/net/tcp; }
wait_ports() { local i m; for i in $(seq 1 200); do m=$(missing_ports "$@"); [ -z "$m" ] && return 0; sleep 0.025; done; die "port(s) $m did not open; see $S/log/"; }

mkdir -p "$S"/{run,log,tls,lib/dovecot,mail,postfix/etc,postfix/spool,postfix/data}
chmod 755 "$S" "$S/run" "$S/log"
# mail_uid=mail must be able to traverse to $S/mail: every parent directory needs o+x
d=$S; while [ "$d" != / ]; do d=$(dirname "$d"); [ -x "$d" ] && [ "$(stat -c %A "$d" | cut -c10)" != - ] || die "$d is not world-traversable (mail user needs o+x on every parent of $S)"; done

# --- TLS: a throwaway CA (tls/ca.pem, what clients trust) and a server certificate it signed
# for 127.0.0.1/localhost/mail.gem.test (rustls/webpki refuse a CA certificate used as the
# server's own, so a single self-signed CA:TRUE cert is not enough). EC P-256: ~40 ms. ---
if [ ! -s "$S/tls/cert.pem" ] || [ ! -s "$S/tls/ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=ticketgate test CA" -keyout "$S/tls/ca-key.pem" -out "$S/tls/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=mail.$DOMAIN" -keyout "$S/tls/key.pem" -out "$S/tls/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:mail.%s,DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' "$DOMAIN" > "$S/tls/server.ext"
  openssl x509 -req -in "$S/tls/server.csr" -CA "$S/tls/ca.pem" -CAkey "$S/tls/ca-key.pem" -CAcreateserial \
    -days 3650 -extfile "$S/tls/server.ext" -out "$S/tls/cert.pem" 2>/dev/null
  chmod 600 "$S/tls/key.pem" "$S/tls/ca-key.pem"
fi

# --- users (passwd-file; same file is passdb and userdb) ---
: > "$S/users.new"
PW=${MAILSTACK_PASSWORD:-secret}
for u in $USERS; do echo "$u:{PLAIN}$PW::::::" >> "$S/users.new"; done
mv "$S/users.new" "$S/users"; chmod 644 "$S/users"
chown mail:mail "$S/mail"
chown postfix:postfix "$S/postfix/data"

# --- Dovecot config (never reads /etc/dovecot) ---
CAPLINE=""; [ -n "$CAP" ] && CAPLINE="  imap_capability = $CAP"
cat > "$S/dovecot.conf.new" <<EOF
# generated by up.sh -- do not edit
instance_name = mailstack-$(echo "$S" | md5sum | cut -c1-8)
base_dir = $S/run/dovecot
state_dir = $S/lib/dovecot
protocols = imap lmtp
listen = 127.0.0.1
log_path = $S/log/dovecot.log
info_log_path = $S/log/dovecot.log
ssl = yes
ssl_cert = <$S/tls/cert.pem
ssl_key = <$S/tls/key.pem
ssl_dh = </usr/share/dovecot/dh.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 8
mail_uid = mail
mail_gid = mail
mail_location = maildir:~/Maildir
mail_fsync = $FSYNC
mail_max_userip_connections = ${MAILSTACK_MAX_USERIP_CONNECTIONS:-100}
mailbox_idle_check_interval = 30 secs
imap_idle_notify_interval = ${MAILSTACK_IDLE_NOTIFY:-2 mins}
passdb {
  driver = passwd-file
  args = scheme=PLAIN $S/users
}
userdb {
  driver = passwd-file
  args = $S/users
  default_fields = uid=mail gid=mail home=$S/mail/%u
}
namespace inbox {
  inbox = yes
  separator = ${MAILSTACK_SEPARATOR:-/}
  prefix = ${MAILSTACK_NAMESPACE_PREFIX:-}
  mailbox Drafts {
    special_use = \\Drafts
    auto = subscribe
  }
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
  mailbox Junk {
    special_use = \\Junk
    auto = subscribe
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
  process_min_avail = 1
}
service lmtp {
  unix_listener $S/run/lmtp {
    mode = 0666
  }
  inet_listener lmtp {
    address = 127.0.0.1
    port = $LMTP_PORT
  }
}
service auth {
  unix_listener $S/run/auth {
    mode = 0666
  }
}
protocol imap {
$CAPLINE
}
protocol lmtp {
  mail_plugins = \$mail_plugins
  postmaster_address = postmaster@$DOMAIN
}
# Sieve (Pigeonhole): a user's active script is ~/.dovecot.sieve (-> $S/mail/USER/.dovecot.sieve)
plugin {
  sieve = file:~/sieve;active=~/.dovecot.sieve
  sieve_extensions = +editheader +vnd.dovecot.debug
  sieve_redirect_envelope_from = recipient
}
submission_host = 127.0.0.1:$SMTP_PORT
EOF

# --- Postfix config: own config_directory, queue_directory under $S ---
P=$S/postfix PC=$S/postfix/etc   # config dir must not contain spool/data (postfix-script checks it recursively)
cat > "$PC/main.cf.new" <<EOF
# generated by up.sh -- do not edit
compatibility_level = 3.6
queue_directory = $P/spool
data_directory = $P/data
meta_directory = /etc/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = $S/log/postfix.log
maillog_file_prefixes = $S/log
myhostname = mail.$DOMAIN
mydomain = $DOMAIN
myorigin = $DOMAIN
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_banner = \$myhostname ESMTP mailstack
biff = no
append_dot_mydomain = no
# everything for gem.test goes to Dovecot over LMTP; unknown gem.test users are rejected at RCPT
virtual_mailbox_domains = $DOMAIN
virtual_mailbox_maps = texthash:$PC/vmailbox
virtual_transport = lmtp:unix:$S/run/lmtp
# any recipient outside gem.test (e.g. an external customer being Cc'd) lands in outside@gem.test
virtual_alias_maps = regexp:$PC/virtual_alias.regexp
# must be empty: it defaults to \$virtual_alias_maps and the catch-all regexp would claim gem.test
virtual_alias_domains =
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $S/run/auth
smtpd_tls_security_level = may
smtpd_tls_auth_only = no
smtpd_tls_cert_file = $S/tls/cert.pem
smtpd_tls_key_file = $S/tls/key.pem
message_size_limit = 52428800
lmtp_destination_recipient_limit = 50
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
anvil_rate_time_unit = 60s
in_flow_delay = 0
default_destination_concurrency_limit = 20
delay_warning_time = 0
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
queue_run_delay = 10s
minimal_backoff_time = 10s
maximal_backoff_time = 60s
alias_maps =
alias_database =
local_recipient_maps =
EOF
: > "$PC/vmailbox.new"; for u in $USERS; do echo "$u@$DOMAIN OK" >> "$PC/vmailbox.new"; done
cat > "$PC/virtual_alias.regexp.new" <<EOF
if !/@${DOMAIN//./\\.}\$/
/^.*\$/ outside@$DOMAIN
endif
EOF
cat > "$PC/master.cf.new" <<EOF
# generated by up.sh -- no chroot anywhere
127.0.0.1:$SMTP_PORT  inet n - n - - smtpd
127.0.0.1:$SMTPS_PORT inet n - n - - smtpd -o smtpd_tls_wrappermode=yes
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -    - proxymap
proxywrite unix - - n -    1 proxymap
smtp      unix  - - n -    - smtp
relay     unix  - - n -    - smtp
showq     unix  n - n -    - showq
error     unix  - - n -    - error
retry     unix  - - n -    - error
discard   unix  - - n -    - discard
local     unix  - n n -    - local
virtual   unix  - n n -    - virtual
lmtp      unix  - - n -    - lmtp
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF

# replace a config file; return 0 if it changed
swap() { if [ -f "$2" ] && cmp -s "$1" "$2"; then rm -f "$1"; return 1; fi; mv "$1" "$2"; return 0; }

DPID=$S/run/dovecot/master.pid
PPID_FILE=$P/spool/pid/master.pid

# --- start / reload Dovecot ---
if swap "$S/dovecot.conf.new" "$S/dovecot.conf" && alive "$DPID"; then
  # config changed: SIGHUP = reload (new connections get the new settings, e.g. imap_capability)
  doveconf -c "$S/dovecot.conf" >/dev/null || die "bad dovecot config (see doveconf -c $S/dovecot.conf)"
  kill -HUP "$(cat "$DPID")"; sleep 0.2
elif ! alive "$DPID"; then
  rm -f "$DPID"
  # stdio must not be inherited, or "up.sh | tee" / subprocess pipes never see EOF
  dovecot -c "$S/dovecot.conf" </dev/null >>"$S/log/dovecot-start.log" 2>&1 || die "dovecot failed to start: $(tail -n4 "$S/log/dovecot-start.log" | tr '\n' ' ') (logs: $S/log/)"
fi

# --- start / reload Postfix ---
pchg=0
swap "$PC/main.cf.new" "$PC/main.cf" && pchg=1
swap "$PC/master.cf.new" "$PC/master.cf" && pchg=1
swap "$PC/vmailbox.new" "$PC/vmailbox" && pchg=1
swap "$PC/virtual_alias.regexp.new" "$PC/virtual_alias.regexp" && pchg=1
# Postfix treats files modified in the last ~2 s as "hot" and re-reads them every 300 ms until
# they cool down (dict_load_file): backdate what we wrote, or every fresh start costs ~2.2 s.
touch -d '2000-01-01' "$PC"/main.cf "$PC"/master.cf "$PC"/vmailbox "$PC"/virtual_alias.regexp
if alive "$PPID_FILE"; then
  [ $pchg = 1 ] && postfix -c "$PC" reload </dev/null >/dev/null 2>&1
else
  # Create the queue tree ourselves (as /etc/postfix/postfix-files says) and skip postfix-script's
  # integrity check via the quick-start marker: that check costs ~2.3 s on a fresh queue dir.
  Q=$P/spool
  for q in active bounce corrupt defer deferred flush hold incoming private saved trace; do
    [ -d "$Q/$q" ] || install -d -o postfix -g root -m 700 "$Q/$q"; done
  [ -d "$Q/maildrop" ] || install -d -o postfix -g postdrop -m 730 "$Q/maildrop"
  [ -d "$Q/public" ] || install -d -o postfix -g postdrop -m 710 "$Q/public"
  [ -d "$Q/pid" ] || install -d -o root -g root -m 755 "$Q/pid"
  touch "$Q/quick-start"
  postfix -c "$PC" start </dev/null >>"$S/log/postfix-start.log" 2>&1 || die "postfix failed to start: $(tail -n3 "$S/log/postfix-start.log" | tr '\n' ' ') (logs: $S/log/)"
fi

wait_ports $IMAP_PORT $IMAPS_PORT $LMTP_PORT $SMTP_PORT $SMTPS_PORT
for i in $(seq 1 200); do [ -S "$S/run/lmtp" ] && break; sleep 0.025; done

cat > "$S/env.sh" <<EOF
# source me: connection facts of the mail stack in $S
export MAILSTACK_DIR=$S MAILSTACK_DOMAIN=$DOMAIN MAILSTACK_PASSWORD=$PW
export MAILSTACK_IMAP_PORT=$IMAP_PORT MAILSTACK_IMAPS_PORT=$IMAPS_PORT MAILSTACK_SMTP_PORT=$SMTP_PORT MAILSTACK_SMTPS_PORT=$SMTPS_PORT MAILSTACK_LMTP_PORT=$LMTP_PORT
export MAILSTACK_CA=$S/tls/ca.pem MAILSTACK_PORT_OFFSET=$O
EOF
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "mailstack up in ${ms} ms: state=$S imap=127.0.0.1:$IMAP_PORT imaps=:$IMAPS_PORT smtp=:$SMTP_PORT smtps=:$SMTPS_PORT lmtp=:$LMTP_PORT domain=$DOMAIN pw=$PW"
