#!/bin/sh
# Installs what the system tests (./systest) drive, on a fresh Debian or
# Ubuntu machine:
#
#   nginx, haproxy  real PROXY-protocol consumers behind the hub
#   wrk             HTTP load through the tunnel
#   coturn          a real STUN server (turnserver), also for tunnel/stun's TestCoturn
#   dnsmasq-base    a real DNS server behind the hub's UDP path (the binary only:
#                   no service, no system resolver change)
#   iperf3          UDP load (loss and jitter) through the tunnel
#   iproute2        ip (network namespaces, veth, TUN) and tc (netem)
#   iptables        cutting a link without a clean close
#   systemd         systemd-analyze verify on deploy/systemd's units
#   podman          builds the container image (make image-check)
#
# Idempotent and quiet: it does nothing when every tool is there. The
# packages' own services (nginx, haproxy, coturn, iperf3) are never started: the
# start on install is refused with policy-rc.d (honoured by invoke-rc.d and
# deb-systemd-invoke), and with systemd the units are disabled and stopped in
# case they came up anyway. The tests start their own instances on loopback
# or inside their own network namespaces.
#
# tc netem needs the sch_netem kernel module (on Ubuntu it is in
# linux-modules-extra-$(uname -r)); this script tries to load it. Without it
# the two-host tests emulate the link in userspace over TUN devices instead.
set -eu
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export PATH

SUDO=
if [ "$(id -u)" -ne 0 ]; then
	SUDO=sudo
fi

have() {
	command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

missing=
for pair in nginx:nginx haproxy:haproxy wrk:wrk turnserver:coturn dnsmasq:dnsmasq-base iperf3:iperf3 ip:iproute2 tc:iproute2 iptables:iptables systemd-analyze:systemd podman:podman; do
	tool=${pair%%:*}
	pkg=${pair#*:}
	if ! have "$tool"; then
		case " $missing " in
		*" $pkg "*) ;;
		*) missing="$missing $pkg" ;;
		esac
	fi
done

if [ -n "$missing" ]; then
	policy=/usr/sbin/policy-rc.d
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
		$SUDO chmod 0755 "$policy"
		trap '$SUDO rm -f "$policy"' EXIT
	fi
	$SUDO apt-get update -qq
	# shellcheck disable=SC2086 # $missing is a list of package names
	$SUDO env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The daemons the packages ship must not run.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	for unit in nginx.service haproxy.service coturn.service iperf3.service; do
		if systemctl list-unit-files "$unit" >/dev/null 2>&1; then
			$SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
		fi
	done
fi
if command -v pgrep >/dev/null 2>&1; then
	for daemon in nginx haproxy turnserver iperf3; do
		if pgrep -x "$daemon" >/dev/null 2>&1; then
			echo "ci-system-deps: warning: a $daemon process is running (not started by the tests)" >&2
		fi
	done
fi

# Kernel modules the namespace tests use; all are optional (the tests say
# what they fall back to, or skip naming the module), so failures here are
# not errors. nf_tables (the edge firewall's kernel backend, driven over
# netlink by the binary itself: no nft tool needed) is built in on most
# kernels; where it is a module, it is loaded here.
if [ ! -d /sys/module/nf_tables ]; then
	$SUDO modprobe nf_tables >/dev/null 2>&1 || true
fi
if [ ! -e /dev/net/tun ]; then
	$SUDO modprobe tun >/dev/null 2>&1 || true
fi
if ! grep -q '^sch_netem ' /proc/modules 2>/dev/null; then
	if ! $SUDO modprobe sch_netem >/dev/null 2>&1 && [ -r /etc/lsb-release ] && grep -q Ubuntu /etc/lsb-release; then
		$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends "linux-modules-extra-$(uname -r)" >/dev/null 2>&1 || true
		$SUDO modprobe sch_netem >/dev/null 2>&1 || true
	fi
fi

echo "ci-system-deps: nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), $(haproxy -v 2>/dev/null | head -n1 | cut -d' ' -f1-3)," \
	"wrk $(wrk -v 2>&1 | head -n1 | cut -d' ' -f2), coturn $(turnserver --version 2>/dev/null || echo '?'), $(dnsmasq --version 2>/dev/null | head -n1 | cut -d' ' -f1-3)," \
	"$(iperf3 --version 2>/dev/null | head -n1 | cut -d' ' -f1-2), $(ip -V 2>/dev/null), $(iptables --version 2>/dev/null)," \
	"$(systemd-analyze --version 2>/dev/null | head -n1), $(podman --version 2>/dev/null)"
