#!/usr/bin/env bash
# Install the Debian packages the project needs (make deps). Idempotent and fast when
# everything is present: dpkg-query decides, and apt-get update runs only when
# something must be installed or the apt lists are empty (the guest image builder
# needs `apt-cache show linux-image-cloud-amd64` to work).
#
# Go itself is not installed here: it must already be on PATH or in /usr/local/go.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(
	# VMM: qemu-system-x86_64; virtiofsd is /usr/lib/qemu/virtiofsd (qemu-system-common)
	qemu-system-x86
	qemu-system-common
	# test image (integration/testimage) and guest tooling
	busybox-static
	# distro test image (integration/distroimage): bookworm with curl, verified
	# against Debian's archive key
	debootstrap
	debian-archive-keyring
	linux-source-6.1
	build-essential
	# applies images/kernel/patches to the kernel source
	patch
	flex
	bison
	bc
	libelf-dev
	# runc and friends build with -tags seccomp
	libseccomp-dev
	# the Rust virtiofsd (hack/build-tools.sh virtiofsd): Debian 12's newer Rust
	# toolchain and the C libraries it links
	rustc-web
	cargo-web
	libcap-ng-dev
	pkg-config
	curl
	# networking for containers and the policy re-dial path
	iproute2
	iptables
	# nft: dev-down deletes the nf_tables tables iptables-nft created for dockerd
	nftables
	ca-certificates
	# ps/pgrep/pkill, fuser/killall, mount/umount/findmnt used by the hack scripts
	procps
	psmisc
	util-linux
)

go="$(find_go)"
log "using $("$go" version) at $go"

[[ $(id -u) -eq 0 ]] || die "must run as root to install packages (apt-get install)"
{ command -v dpkg-query && command -v apt-get; } >/dev/null ||
	die "this script needs a Debian-based system (dpkg-query/apt-get not found)"

missing=()
for p in "${PACKAGES[@]}"; do
	if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
		missing+=("$p")
	fi
done

apt_lists_empty() {
	! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

updated=false
apt_update() {
	$updated && return 0
	log "apt-get update"
	DEBIAN_FRONTEND=noninteractive apt-get update -q ||
		die "apt-get update failed (is Debian's mirror reachable?)"
	updated=true
}

if ((${#missing[@]} > 0)) || apt_lists_empty; then
	apt_update
fi

if ((${#missing[@]} > 0)); then
	log "installing: ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
		die "apt-get install ${missing[*]} failed"
fi

# The guest image builder looks the kernel package up; make sure apt knows it.
# apt-cache rebuilds its cache on every call here (Dir::Cache::pkgcache ""), ~1.3 s,
# so look into the (compressed) lists with apt-helper first: ~0.05 s.
apt_knows_kernel() {
	local lists n
	lists=$(compgen -G '/var/lib/apt/lists/*_Packages*') || return 1
	# grep -c reads everything: no SIGPIPE for apt-helper to fail the pipeline with.
	# shellcheck disable=SC2086 # word splitting of the list of files is wanted
	n=$(/usr/lib/apt/apt-helper cat-file $lists 2>/dev/null | grep -cx 'Package: linux-image-cloud-amd64' || true)
	((n > 0)) || apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1
}
if ! apt_knows_kernel; then
	apt_update
	apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1 ||
		die "apt-cache does not know linux-image-cloud-amd64 even after apt-get update; check /etc/apt/sources.list"
fi

[[ -x /usr/lib/qemu/virtiofsd ]] || die "/usr/lib/qemu/virtiofsd missing although qemu-system-common is installed"
[[ -x /bin/busybox ]] || die "/bin/busybox missing although busybox-static is installed"
[[ -x /usr/sbin/debootstrap ]] || die "/usr/sbin/debootstrap missing although debootstrap is installed"

if ((${#missing[@]} == 0)); then
	log "all packages present"
else
	log "installed ${#missing[@]} package(s)"
fi
