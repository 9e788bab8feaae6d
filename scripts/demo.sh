#!/usr/bin/env bash
# demo.sh — bring up the testbed, start understudy in front of the primary
# and the backup, download a large file through the VIP at a limited rate,
# kill the primary's web server (kill -9) in the middle of it, and show what
# the client saw: the sha256 comparison, that no reset reached it, when the
# failure was detected and how long the client stalled. Then tear down.
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
	--control "$SOCK" --probe-interval 10ms --probe-misses 3 --probe-http /index.html \
	>"$D/gateway.log" 2>&1 &
GWPID=$!
for _ in $(seq 100); do
	ip netns exec "$P-gw" "$BIN" status --control "$SOCK" >/dev/null 2>&1 && break
	kill -0 "$GWPID" 2>/dev/null || { cat "$D/gateway.log"; echo "demo: gateway exited" >&2; exit 1; }
	sleep 0.1
done
sed 's/^/  gateway: /' "$D/gateway.log"

say "downloading big.bin (64 MiB) through the VIP at 16 MB/s; the primary is killed after 1.5 s"
ip netns exec "$P-cli" tcpdump -i eth0 -nn -s 96 -w "$D/demo-client.pcap" "tcp and host $VIP" 2>/dev/null &
TCPDUMP=$!
sleep 0.5
ip netns exec "$P-cli" curl -sS -o "$D/demo-download.bin" --limit-rate 16M \
	-w '  client: %{size_download} bytes in %{time_total}s over %{num_connects} connection, HTTP %{http_code}\n' \
	"http://$VIP/big.bin" &
CURL=$!
sleep 1.5
echo "  killing the primary's web server (kill -9) at $(date +%T.%N | cut -c1-12)"
for pid in $(ip netns pids "$P-pri"); do kill -9 "$pid" 2>/dev/null || true; done
wait "$CURL"
sleep 0.3
kill "$TCPDUMP" 2>/dev/null || true
wait "$TCPDUMP" 2>/dev/null || true

want=$(awk '$2 ~ /big.bin$/ {print $1}' "$D/www/SHA256SUMS")
got=$(sha256sum "$D/demo-download.bin" | awk '{print $1}')
echo "  served  sha256 $want"
echo "  client  sha256 $got"
rm -f "$D/demo-download.bin"
rsts=$(tcpdump -nn -r "$D/demo-client.pcap" "src host $VIP and tcp[tcpflags] & tcp-rst != 0" 2>/dev/null | wc -l)
echo "  resets from the VIP seen by the client: $rsts"
echo "  (the gateway's own measure of detection and of the client's stall is in its status below)"

say "gateway status"
ip netns exec "$P-gw" "$BIN" status --control "$SOCK" | sed 's/^/  /'

if [[ $want == "$got" && $rsts == 0 ]]; then
	say "OK: the primary died mid-reply; the client got the whole file intact on its one connection, with no reset"
else
	say "FAIL: sha256 mismatch or a reset reached the client"
	exit 1
fi
