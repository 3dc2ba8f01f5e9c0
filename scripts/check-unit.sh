#!/usr/bin/env bash
# check-unit.sh: systemd-analyze verify and the security exposure of systemd/ticketgate.service.
set -euo pipefail
cd "$(dirname "$0")/.."
unit=systemd/ticketgate.service
# verify wants the ExecStart binary to exist: check against a copy pointing at the built one.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
bin=$(pwd)/target/debug/ticketgate
[ -x "$bin" ] || cargo build --quiet
sed -e "s|/usr/bin/ticketgate|$bin|g" -e "s|/usr/libexec/ticketgate/reload|$(pwd)/packaging/reload|g" "$unit" > "$tmp/ticketgate.service"
systemd-analyze verify --man=no "$tmp/ticketgate.service"
score=$(systemd-analyze security --offline=true "$tmp/ticketgate.service" 2>/dev/null | awk '/Overall exposure level/ {print $(NF-2)}')
echo "systemd unit: verify ok; exposure $score"
awk -v s="$score" 'BEGIN { exit !(s != "" && s+0 <= 4.0) }' || { echo "exposure $score is above 4.0 (OK)"; exit 1; }
