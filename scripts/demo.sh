#!/usr/bin/env bash
# demo.sh — bring up the testbed, start understudy in front of the primary
# and the backup, download a large file through the VIP, compare its sha256,
# show the gateway's status, and tear everything down.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
P=${US_PREFIX:-us}
export US_DIR=${US_DIR:-/tmp/understudy-testbed}
D=$US_DIR
SOCK=$D/understudy.sock
VIP=10.77.0.100
BIN=$REPO/bin/understudy
GWPID=

say() { printf '\n== %s\n' "$*"; }

cleanup() {
	if [[ -n $GWPID ]] && kill -0 "$GWPID" 2>/dev/null; then
		kill -TERM "$GWPID" 2>/dev/null || true
		wait "$GWPID" 2>/dev/null || true
	fi
	"$REPO/scripts/testbed.sh" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

[[ $(id -u) == 0 ]] || { echo "demo: run as root (it builds network namespaces)" >&2; exit 1; }
[[ -x $BIN ]] || { echo "demo: $BIN missing; run 'make demo' (it builds first)" >&2; exit 1; }

say "bringing up the testbed (client, gateway, LAN bridge, primary, backup)"
"$REPO/scripts/testbed.sh" up

say "starting understudy in namespace $P-gw"
ip netns exec "$P-gw" "$BIN" run --client-iface cli0 --server-iface srv0 \
	--vip $VIP --port 80 --primary 10.77.2.10 --backup 10.77.2.11 \
	--control "$SOCK" >"$D/gateway.log" 2>&1 &
GWPID=$!
for _ in $(seq 100); do
	ip netns exec "$P-gw" "$BIN" status --control "$SOCK" >/dev/null 2>&1 && break
	kill -0 "$GWPID" 2>/dev/null || { cat "$D/gateway.log"; echo "demo: gateway exited" >&2; exit 1; }
	sleep 0.1
done
sed 's/^/  gateway: /' "$D/gateway.log"

say "downloading big.bin (64 MiB) through the VIP from the client namespace"
ip netns exec "$P-cli" curl -sS -o "$D/demo-download.bin" \
	-w '  %{size_download} bytes in %{time_total}s, %{speed_download} B/s, %{num_connects} connection\n' \
	"http://$VIP/big.bin"
want=$(awk '$2 ~ /big.bin$/ {print $1}' "$D/www/SHA256SUMS")
got=$(sha256sum "$D/demo-download.bin" | awk '{print $1}')
echo "  served  sha256 $want"
echo "  client  sha256 $got"
rm -f "$D/demo-download.bin"

say "both servers served the request (their access logs)"
for s in pri bak; do
	printf '  %s: %s\n' "$s" "$(grep -c 'big.bin' "$D/$s/access.log" 2>/dev/null || echo 0) request(s) for big.bin"
done

say "gateway status"
ip netns exec "$P-gw" "$BIN" status --control "$SOCK" | sed 's/^/  /'

if [[ $want == "$got" ]]; then
	say "OK: the client received the file intact through understudy"
else
	say "FAIL: sha256 mismatch"
	exit 1
fi
