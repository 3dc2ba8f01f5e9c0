#!/usr/bin/env bash
# install-deps.sh: installs what ticketgate's demo, tests and benchmarks need on Debian 12,
# only what is missing. Idempotent; needs root for apt-get.
#   mail stack: dovecot-imapd dovecot-lmtpd postfix openssl   schema test: postgresql
#   unit checks: systemd (systemd-analyze)   C parts of ring and SQLite: gcc libc6-dev
#   package checks: lintian, prometheus (promtool, and a real scrape; never started as a
#   service here); the systemd box (scripts/box-test.sh) installs its own tools
#   benchmarks: imapfilter, time (/usr/bin/time -v) (TICKETGATE_BENCH_DEPS=1)
set -euo pipefail
want=(dovecot-imapd dovecot-lmtpd postfix openssl ca-certificates python3 postgresql systemd gcc libc6-dev lintian prometheus)
[ "${TICKETGATE_BENCH_DEPS:-0}" = 1 ] && want+=(imapfilter time)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "install-deps: need root to install: ${missing[*]}" >&2; exit 1; }
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep apt from starting the system's own dovecot/postfix/postgresql on :25/:143/:5432.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do [ -d "$d" ] && PATH="$d:$PATH"; done
if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo is not on PATH; install Rust >= 1.95 (rustup) and re-run" >&2; exit 1
fi
v=$(cargo --version | awk '{print $2}')
if [ "$(printf '%s\n1.95.0\n' "$v" | sort -V | head -n1)" != 1.95.0 ]; then
  echo "install-deps: cargo $v is older than 1.95; update the toolchain (rustup update)" >&2; exit 1
fi
echo "install-deps: ok (cargo $v)"
