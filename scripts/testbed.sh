#!/usr/bin/env bash
# testbed.sh — network-namespace testbed for understudy (DESIGN.md §2, §5).
#
#   client ns ${P}-cli  eth0 10.77.1.2/24 ── cli0 10.77.1.1/24  ns ${P}-gw (router host)
#                                             srv0 10.77.2.1/24 ── gw ┐
#                                                       ns ${P}-lan: br0 ├─ pri ── eth0 10.77.2.10/24 ns ${P}-pri
#                                                                        └─ bak ── eth0 10.77.2.11/24 ns ${P}-bak
#
# The VIP 10.77.0.100 lives on no interface: the client reaches it by its
# default route and the gateway (or, with --mode kernel, an nftables DNAT)
# takes it in ${P}-gw.
#
# Usage: testbed.sh up [--mode kernel] [--huge] [--offloads] [--no-nginx] [--max-conns N]
#        (--offloads leaves veth's TSO/GSO and checksum offloads on: for the
#        gateway's --keep-offloads and the kernel's own forwarding at speed)
#        testbed.sh down
#        testbed.sh status
#        testbed.sh restart-server pri|bak [--max-conns N] [--sndbuf SIZE]
#                   (start the web servers again after a fault, or sized anew;
#                   --sndbuf fixes nginx's socket send buffers, 0 undoes it)
#
# Environment: US_PREFIX (default "us"), US_DIR (default /tmp/understudy-testbed),
# US_USWEB (path of the usweb binary; default bin/usweb, built when missing).
set -euo pipefail

P=${US_PREFIX:-us}
D=${US_DIR:-/tmp/understudy-testbed}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WWW=$D/www
KEEP_OFFLOADS=0 # up --offloads

VIP=10.77.0.100
CLI_IP=10.77.1.2
GW_CLI_IP=10.77.1.1
GW_SRV_IP=10.77.2.1
declare -A SRV_IP=([pri]=10.77.2.10 [bak]=10.77.2.11)
SERVERS=(pri bak)
NAMESPACES=("$P-cli" "$P-gw" "$P-lan" "$P-pri" "$P-bak")

log() { printf 'testbed: %s\n' "$*" >&2; }
die() { printf 'testbed: error: %s\n' "$*" >&2; exit 1; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# need TOOL PACKAGE... : fail naming the Debian package that provides each missing tool.
need() {
	local missing=() pkgs=()
	while (($#)); do
		command -v "$1" >/dev/null 2>&1 || { missing+=("$1"); pkgs+=("$2"); }
		shift 2
	done
	((${#missing[@]} == 0)) || die "missing ${missing[*]}; install with: apt-get install -y ${pkgs[*]}"
}

preflight() {
	[[ $(id -u) == 0 ]] || die "must run as root (it creates network namespaces)"
	need ip iproute2 bridge iproute2 ethtool ethtool curl curl
}

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# offloads_off NS IFACE: veth passes senders' TSO super-frames straight
# through, which an AF_PACKET gateway cannot forward; segment at the source.
# Each feature separately, because ethtool fails as a whole when one of them
# is fixed on a device.
offloads_off() {
	local f
	((KEEP_OFFLOADS)) && return
	for f in tso gso gro lro; do
		nsx "$1" ethtool -K "$2" "$f" off 2>/dev/null || true
	done
}

# sysctls applied in every namespace before links exist, so new interfaces
# inherit them from "default".
ns_sysctls() {
	nsx "$1" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
	# No IPv6: router solicitations and MLD reports would only add noise to
	# captures and to the gateway's input.
	nsx "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null || true
}

# veth NS1 IF1 NS2 IF2: a pair created directly inside the namespaces, so
# names never collide with the root namespace's interfaces.
veth() {
	ip -n "$1" link add "$2" type veth peer name "$4" netns "$3"
	offloads_off "$1" "$2"
	offloads_off "$3" "$4"
}

make_content() {
	local huge=$1
	mkdir -p "$WWW"
	# mkfile NAME BYTES: random content made once, kept across runs.
	mkfile() {
		local f=$WWW/$1
		if [[ ! -f $f || $(stat -c %s "$f") != "$2" ]]; then
			log "generating $1 ($2 bytes)"
			head -c "$2" /dev/urandom >"$f.tmp"
			mv "$f.tmp" "$f"
		fi
	}
	if [[ ! -f $WWW/index.html ]]; then
		printf '<!doctype html>\n<title>understudy testbed</title>\n<p>understudy testbed content</p>\n' >"$WWW/index.html"
	fi
	mkfile 1k.bin 1024
	mkfile big.bin $((64 << 20))
	((huge)) && mkfile huge.bin $((256 << 20))
	own_content
	# Recompute the sums only when a file is newer than them: hashing 64 MiB
	# on every run would dominate the start-up time.
	local sums=$WWW/SHA256SUMS
	if [[ ! -f $sums ]] || [[ -n $(find "$WWW" -maxdepth 1 -type f ! -name SHA256SUMS -newer "$sums") ]] ||
		[[ $(wc -l <"$sums") != $(find "$WWW" -maxdepth 1 -type f ! -name SHA256SUMS ! -name '*.tmp' | wc -l) ]]; then
		(cd "$WWW" && sha256sum -- $(ls | grep -v -e '^SHA256SUMS$' -e '\.tmp$') >SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)
	fi
}

# own_content: content that differs between the servers on purpose, served
# under /own/ from $D/www-<srv>. diverge.bin has the same first 9 MiB on both
# servers but is 9 MiB on the primary and 10 MiB on the backup, so the replies
# differ in length from their Content-Length on: a test of the gateway's
# refusal to splice two different replies.
own_content() {
	local s
	for s in "${SERVERS[@]}"; do mkdir -p "$D/www-$s"; done
	local bak=$D/www-bak/diverge.bin pri=$D/www-pri/diverge.bin
	if [[ ! -f $bak || $(stat -c %s "$bak") != $((10 << 20)) ]]; then
		log "generating www-bak/diverge.bin"
		head -c $((10 << 20)) /dev/urandom >"$bak.tmp" && mv "$bak.tmp" "$bak"
		rm -f "$pri"
	fi
	if [[ ! -f $pri || $(stat -c %s "$pri") != $((9 << 20)) ]]; then
		head -c $((9 << 20)) "$bak" >"$pri.tmp" && mv "$pri.tmp" "$pri"
	fi
}

usweb_bin() {
	if [[ -n ${US_USWEB:-} ]]; then
		[[ -x $US_USWEB ]] || die "US_USWEB=$US_USWEB is not an executable"
		echo "$US_USWEB"
	elif [[ -x $REPO/bin/usweb ]]; then
		echo "$REPO/bin/usweb"
	else
		command -v go >/dev/null || die "bin/usweb is missing and go is not installed to build it"
		log "building usweb"
		(cd "$REPO" && go build -o "$D/bin/usweb" ./cmd/usweb) || die "go build ./cmd/usweb failed"
		echo "$D/bin/usweb"
	fi
}

nginx_conf() {
	local s=$1 sd=$D/$1 conns workers=1 reuseport="" sndbuf=""
	conns=$(cat "$D/maxconns" 2>/dev/null || echo 4096)
	# A fixed send buffer (restart-server --sndbuf) instead of the kernel's
	# autotuning: what a hung server's kernel still sends from its sockets.
	[[ -f $sd/sndbuf ]] && sndbuf=" sndbuf=$(cat "$sd/sndbuf")"
	# One process may not hold more than 20000 files here (a hard limit
	# root cannot raise without CAP_SYS_RESOURCE): many connections take
	# several workers, each with its own listening socket.
	if ((conns > 15000)); then
		workers=$(((conns + 14999) / 15000))
		conns=18000
		reuseport=" reuseport"
	fi
	mkdir -p "$sd/tmp"
	cat >"$sd/nginx.conf" <<EOF
# Generated by scripts/testbed.sh for server "$s"; rewritten on every "up".
user root;
worker_processes $workers;
worker_rlimit_nofile $((conns + 1024));
pid $sd/nginx.pid;
error_log $sd/error.log warn;
events { worker_connections $conns; }
http {
	include /etc/nginx/mime.types;
	default_type application/octet-stream;
	# \$uri last: it is the only field that may contain spaces.
	log_format us '\$remote_addr \$request_method \$status \$body_bytes_sent \$request_length \$connection \$connection_requests \$request_time \$uri';
	access_log $sd/access.log us;
	client_body_temp_path $sd/tmp/body;
	proxy_temp_path $sd/tmp/proxy;
	fastcgi_temp_path $sd/tmp/fastcgi;
	uwsgi_temp_path $sd/tmp/uwsgi;
	scgi_temp_path $sd/tmp/scgi;
	sendfile on;
	keepalive_requests 1000000;
	keepalive_timeout 120s;
	# Idle connections that never send a request stay open as long as
	# keep-alive ones (the bench holds 100k of them).
	client_header_timeout 120s;
	server {
		listen 80$reuseport$sndbuf;
		root $WWW;
		location /upload {
			client_max_body_size 256m;
			proxy_request_buffering on;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_pass http://127.0.0.1:8081;
		}
		location /transfer {
			client_max_body_size 256m;
			proxy_request_buffering on;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_pass http://127.0.0.1:8081;
		}
		location = /ledger {
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_pass http://127.0.0.1:8081;
		}
		# This server's own content (own_content).
		location /own/ {
			alias $D/www-$s/;
		}
	}
}
EOF
}

# start_server pri|bak: nginx in front of usweb, or usweb alone on :80.
start_server() {
	local s=$1 sd=$D/$1 ns=$P-$1 usweb listen
	usweb=$(usweb_bin)
	mkdir -p "$sd"
	if [[ $(cat "$D/webserver" 2>/dev/null) == nginx ]]; then
		nginx_conf "$s"
		listen=127.0.0.1:8081
		nsx "$ns" nginx -e "$sd/error.log" -p "$sd" -c "$sd/nginx.conf" || die "nginx failed to start in $ns (see $sd/error.log)"
	else
		listen=:80
	fi
	# ip netns exec execs the command, so $! is usweb's own pid. Output goes
	# to files so that no caller's pipe is held open by the daemon.
	nsx "$ns" "$usweb" -listen "$listen" -root "$WWW" -log "$sd/usweb.log" \
		-ledger "$sd/ledger" -own "$D/www-$s" </dev/null >>"$sd/usweb.out" 2>&1 &
	echo $! >"$sd/usweb.pid"
}

# wait_http NS URL WHAT: poll until URL answers from inside NS (10s, so a
# busy machine does not fail the start).
wait_http() {
	local deadline=$((SECONDS + 10))
	until nsx "$1" curl -fsS -o /dev/null --max-time 1 "$2" 2>/dev/null; do
		((SECONDS < deadline)) || die "$3: no answer from $2 in ns $1 after 10s (logs in $D)"
		sleep 0.05
	done
}

wait_bridge() {
	local deadline=$((SECONDS + 10))
	until [[ $(bridge -n "$P-lan" link show | grep -c 'state forwarding') == 3 ]]; do
		((SECONDS < deadline)) || die "bridge ports in $P-lan not forwarding after 10s: $(bridge -n "$P-lan" link show)"
		sleep 0.05
	done
}

stop_pidfile() {
	local f=$1 sig=${2:-TERM} pid
	[[ -f $f ]] || return 0
	pid=$(cat "$f" 2>/dev/null || true)
	[[ $pid =~ ^[0-9]+$ ]] && kill "-$sig" "$pid" 2>/dev/null || true
	rm -f "$f"
}

# kill_ns NS: kill whatever still runs inside one of our namespaces (a
# namespace lives on while a process holds it).
kill_ns() {
	local pids
	ns_exists "$1" || return 0
	pids=$(ip netns pids "$1" 2>/dev/null || true)
	[[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
}

cmd_down() {
	local s ns
	for s in "${SERVERS[@]}"; do
		stop_pidfile "$D/$s/nginx.pid" TERM
		stop_pidfile "$D/$s/usweb.pid" TERM
	done
	stop_pidfile "$D/gateway.pid" TERM
	for ns in "${NAMESPACES[@]}"; do kill_ns "$ns"; done
	for ns in "${NAMESPACES[@]}"; do
		ns_exists "$ns" && ip netns del "$ns"
	done
	rm -f "$D/mode" "$D/webserver" "$D/maxconns"
}

cmd_up() {
	local mode=gateway huge=0 nginx=1 conns=4096 start=${EPOCHREALTIME/./} s ns ms
	while (($#)); do
		case $1 in
		--mode) mode=${2:?--mode needs an argument}; shift 2 ;;
		--mode=*) mode=${1#--mode=}; shift ;;
		--huge) huge=1; shift ;;
		--offloads) KEEP_OFFLOADS=1; shift ;;
		--no-nginx) nginx=0; shift ;;
		# Connections each nginx holds (the bench's 100k idle flows).
		--max-conns) conns=${2:?--max-conns needs an argument}; shift 2 ;;
		*) die "up: unknown option $1" ;;
		esac
	done
	case $mode in gateway | kernel) ;; *) die "--mode must be gateway or kernel, not $mode" ;; esac
	[[ $mode == kernel ]] && need nft nftables
	command -v nginx >/dev/null || nginx=0

	cmd_down
	# Fresh logs and configs for every bed; "down" leaves them for post-mortems.
	rm -rf "$D/pri" "$D/bak" "$D/gateway.log"
	mkdir -p "$D"
	make_content "$huge"
	((nginx)) && echo nginx >"$D/webserver" || echo usweb >"$D/webserver"
	echo "$mode" >"$D/mode"
	[[ $conns =~ ^[0-9]+$ ]] || die "--max-conns wants a number, not $conns"
	echo "$conns" >"$D/maxconns"

	for ns in "${NAMESPACES[@]}"; do
		ip netns add "$ns"
		nsx "$ns" ip link set lo up
		ns_sysctls "$ns"
	done

	# client <-> gateway
	veth "$P-cli" eth0 "$P-gw" cli0
	nsx "$P-cli" ip addr add "$CLI_IP/24" dev eth0
	nsx "$P-cli" ip link set eth0 up
	nsx "$P-cli" ip route add default via "$GW_CLI_IP"
	nsx "$P-gw" ip addr add "$GW_CLI_IP/24" dev cli0
	nsx "$P-gw" ip link set cli0 up

	# gateway <-> LAN bridge <-> servers
	nsx "$P-lan" ip link add br0 type bridge forward_delay 0 stp_state 0
	nsx "$P-lan" ip link set br0 up
	# The bridge stands for the LAN's switch, which runs no firewall: where
	# br_netfilter is loaded, bridged frames would otherwise cross
	# iptables' hooks, a per-frame cost no real LAN has.
	nsx "$P-lan" sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 \
		net.bridge.bridge-nf-call-arptables=0 2>/dev/null || true
	veth "$P-gw" srv0 "$P-lan" gw
	nsx "$P-gw" ip addr add "$GW_SRV_IP/24" dev srv0
	nsx "$P-gw" ip link set srv0 up
	nsx "$P-gw" sysctl -qw net.ipv4.ip_forward=1
	for s in "${SERVERS[@]}"; do
		veth "$P-$s" eth0 "$P-lan" "$s"
		nsx "$P-$s" ip addr add "${SRV_IP[$s]}/24" dev eth0
		nsx "$P-$s" ip link set eth0 up
		nsx "$P-$s" ip route add default via "$GW_SRV_IP"
	done
	for s in gw "${SERVERS[@]}"; do
		nsx "$P-lan" ip link set "$s" master br0
		nsx "$P-lan" ip link set "$s" up
	done
	for ns in "${NAMESPACES[@]}"; do
		nsx "$ns" sh -c 'for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 >"$f"; done'
	done

	if [[ $mode == kernel ]]; then
		# The host-kernel reference: plain DNAT to the primary. No masquerade:
		# the gateway host is the servers' default route.
		nsx "$P-gw" nft -f - <<EOF
table ip us_ref {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr $VIP tcp dport 80 dnat to ${SRV_IP[pri]}:80
	}
}
EOF
	fi

	# The servers start while the bridge ports come up (the kernel's link
	# watcher takes a moment to see the carrier).
	for s in "${SERVERS[@]}"; do start_server "$s"; done
	wait_bridge
	for s in "${SERVERS[@]}"; do
		wait_http "$P-$s" "http://${SRV_IP[$s]}/index.html" "server $s"
		wait_http "$P-gw" "http://${SRV_IP[$s]}/index.html" "server $s seen from the gateway"
	done
	[[ $mode == kernel ]] && wait_http "$P-cli" "http://$VIP/index.html" "kernel DNAT reference"
	ms=$(((${EPOCHREALTIME/./} - start) / 1000))
	log "up in ${ms}ms: prefix $P, dir $D, mode $mode, web server $(cat "$D/webserver")"
}

cmd_restart_server() {
	local s=${1:-}
	[[ $s == pri || $s == bak ]] || die "restart-server: want pri or bak"
	shift
	while (($#)); do
		case $1 in
		--max-conns)
			[[ ${2:-} =~ ^[0-9]+$ ]] || die "restart-server: --max-conns wants a number, not ${2:-nothing}"
			# Read by nginx_conf for both servers: restart the other one too.
			echo "$2" >"$D/maxconns"
			;;
		--sndbuf)
			[[ ${2:-} =~ ^[0-9]+[km]?$ ]] || die "restart-server: --sndbuf wants a size such as 8m (0: the kernel's autotuning), not ${2:-nothing}"
			mkdir -p "$D/$s"
			if [[ $2 =~ ^0+[km]?$ ]]; then rm -f "$D/$s/sndbuf"; else echo "$2" >"$D/$s/sndbuf"; fi
			;;
		*) die "restart-server: unknown option $1" ;;
		esac
		shift 2
	done
	ns_exists "$P-$s" || die "namespace $P-$s does not exist: run up first"
	stop_pidfile "$D/$s/nginx.pid" KILL
	stop_pidfile "$D/$s/usweb.pid" KILL
	kill_ns "$P-$s"
	# Let the kernel release port 80 before binding again.
	local i
	for ((i = 0; i < 50; i++)); do
		[[ -z $(ip netns pids "$P-$s") ]] && break
		sleep 0.02
	done
	start_server "$s"
	wait_http "$P-$s" "http://${SRV_IP[$s]}/index.html" "server $s"
}

cmd_status() {
	local ns rc=0
	echo "prefix $P, dir $D, mode $(cat "$D/mode" 2>/dev/null || echo down), web server $(cat "$D/webserver" 2>/dev/null || echo none)"
	for ns in "${NAMESPACES[@]}"; do
		if ns_exists "$ns"; then
			echo "== $ns: pids $(ip netns pids "$ns" | tr '\n' ' ')"
			nsx "$ns" ip -br addr show | sed 's/^/   /'
		else
			echo "== $ns: missing"
			rc=1
		fi
	done
	local s
	for s in "${SERVERS[@]}"; do
		if ns_exists "$P-$s" && nsx "$P-$s" curl -fsS -o /dev/null --max-time 1 "http://${SRV_IP[$s]}/index.html" 2>/dev/null; then
			echo "server $s: answering"
		else
			echo "server $s: NOT answering"
			rc=1
		fi
	done
	return $rc
}

main() {
	local cmd=${1:-}
	(($#)) && shift
	case $cmd in
	up) preflight; cmd_up "$@" ;;
	down) preflight; cmd_down ;;
	status) preflight; cmd_status ;;
	restart-server) preflight; cmd_restart_server "$@" ;;
	*) echo "usage: $0 up [--mode kernel] [--huge] [--offloads] [--no-nginx] [--max-conns N] | down | status | restart-server pri|bak [--max-conns N] [--sndbuf SIZE]" >&2; exit 2 ;;
	esac
}

main "$@"
