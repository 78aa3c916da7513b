#!/usr/bin/env bash
# Checks a built remoteingress image (make image-check, run by .ci/run):
#   - its config: User 65532:65532, Entrypoint ["/remoteingress-bin"],
#     ports 8443/tcp and 8443/udp, the expected architecture;
#   - its binary: copied out of the image (podman/docker create + cp: this
#     needs no container to run, which sandboxes with tight rlimits refuse)
#     and run with --version, which must print the expected version.
# Usage: scripts/image-check.sh BUILDER IMAGE VERSION ARCH
set -euo pipefail
builder=${1:?builder (podman or docker)} image=${2:?image} version=${3:?version} arch=${4:?arch}

case "$builder" in
podman | docker) ;;
*)
	echo "image-check: needs podman or docker to inspect the image (have: $builder)" >&2
	exit 1
	;;
esac

fail() {
	echo "image-check: $image: $*" >&2
	exit 1
}

inspect() { "$builder" image inspect --format "$1" "$image"; }

user=$(inspect '{{.Config.User}}')
[ "$user" = "65532:65532" ] || fail "User is \"$user\", want 65532:65532"
entrypoint=$(inspect '{{json .Config.Entrypoint}}')
[ "$entrypoint" = '["/remoteingress-bin"]' ] || fail "Entrypoint is $entrypoint, want [\"/remoteingress-bin\"]"
ports=$(inspect '{{json .Config.ExposedPorts}}')
for p in 8443/tcp 8443/udp; do
	case "$ports" in *"\"$p\""*) ;; *) fail "does not expose $p (ExposedPorts $ports)" ;; esac
done
image_arch=$(inspect '{{.Architecture}}')
[ "$image_arch" = "$arch" ] || fail "Architecture is $image_arch, want $arch"

tmp=$(mktemp -d)
cid=
cleanup() {
	if [ -n "$cid" ]; then "$builder" rm -f "$cid" >/dev/null 2>&1 || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT
cid=$("$builder" create "$image" --version)
"$builder" cp "$cid:/remoteingress-bin" "$tmp/remoteingress-bin"

host_arch=$(uname -m)
case "$host_arch" in x86_64) host_arch=amd64 ;; aarch64) host_arch=arm64 ;; esac
if [ "$arch" != "$host_arch" ]; then
	echo "image-check: $image: config OK (User $user, Entrypoint $entrypoint, $ports, $image_arch); the $arch binary cannot run on this $host_arch host"
	exit 0
fi
got=$("$tmp/remoteingress-bin" --version)
[ "$got" = "$version" ] || fail "the binary in it prints version \"$got\", want \"$version\""
echo "image-check: $image: User $user, Entrypoint $entrypoint, ports $ports, $image_arch; remoteingress-bin --version from the image: $got"
