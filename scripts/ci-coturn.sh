#!/bin/sh
# Installs coturn (the `turnserver` binary) for tunnel's TestSTUNCoturn, which
# starts its own STUN-only instance on a random 127.0.0.1 UDP port and fails
# when CI=true and turnserver is missing.
#
# The Debian/Ubuntu package enables and starts a system coturn.service on
# install (0.0.0.0:3478, /etc/turnserver.conf). The test does not need it and
# does not clash with it (it never uses 3478), but a stray daemon on a CI
# runner is noise, so the start is suppressed with policy-rc.d (honoured by
# invoke-rc.d and deb-systemd-invoke) and the unit is disabled and stopped in
# case it came up anyway.
set -eu

SUDO=
if [ "$(id -u)" -ne 0 ]; then
	SUDO=sudo
fi

policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
	$SUDO chmod 0755 "$policy"
	trap '$SUDO rm -f "$policy"' EXIT
fi

$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -qq --no-install-recommends coturn >/dev/null

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	$SUDO systemctl disable --now coturn.service >/dev/null 2>&1 || true
fi
if command -v pgrep >/dev/null 2>&1 && pgrep -x turnserver >/dev/null 2>&1; then
	echo "ci-coturn: warning: a turnserver process is running (not started by the tests)" >&2
fi

echo "ci-coturn: $(command -v turnserver) $(turnserver --version 2>/dev/null || true)"
