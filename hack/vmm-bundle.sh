#!/usr/bin/env bash
# The QEMU and virtiofsd the shim prefers: pinned builds that can save and resume a
# VM (Debian 12's own QEMU 7.2 cannot), laid out where config.Default looks for them,
# <shim dir>/../lib/gondolin (config.BundledQEMU, config.BundledVirtiofsd):
#
#   DEST/qemu/bin/qemu-system-x86_64  QEMU_SNAPSHOT_VERSION, Debian's bookworm-backports build
#   DEST/qemu/share/qemu/             its firmware (the shim passes the directory with -L)
#   DEST/qemu/share/doc/copyright     Debian's copyright file of those packages
#   DEST/virtiofsd                    the Rust virtiofsd VIRTIOFSD_VERSION
#   DEST/SOURCES                      where each comes from, with sha256s
#
#   hack/vmm-bundle.sh build TOOLS DEST    make build: hack/build-tools.sh makes them in
#                                          TOOLS (pinned by version and sha256 there, and
#                                          cached), then they are copied into DEST
#   hack/vmm-bundle.sh install SRC DEST    make install: copy a DEST that `build` made
#
# Copies keep the files' modification times: a VM snapshot's key includes them
# (vmm/snapshot.go), so a copy of the same build must not look like an upgrade. DEST
# is left alone when it holds the same build already (DEST/.vmm.stamp), and the
# files are replaced by rename, so QEMUs running from DEST are not disturbed.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=hack/versions.env
source "$REPO_ROOT/hack/versions.env"

usage="usage: $0 build TOOLS DEST | install SRC DEST"
[[ $# -eq 3 ]] || die "$usage"
mode=$1
[[ $mode == build || $mode == install ]] || die "unknown mode '$mode': $usage"
mkdir -p "$3"
dest="$(cd "$3" && pwd)"

# current STAMP: DEST holds the build STAMP names.
current() {
	[[ -f $dest/.vmm.stamp && "$(cat "$dest/.vmm.stamp")" == "$1" &&
		-x $dest/qemu/bin/qemu-system-x86_64 && -d $dest/qemu/share/qemu && -x $dest/virtiofsd ]]
}

# place STAMP QEMU FIRMWARE_DIR COPYRIGHT VIRTIOFSD SOURCES: put the files into DEST.
place() {
	local want=$1 qemu=$2 firmware=$3 copyright=$4 fsd=$5 sources=$6 tmp
	# One at a time: two builds of the tree may run at once. The lock is on
	# DEST itself, so that no lock file is left in an installed prefix.
	exec 9<"$dest"
	flock 9
	if current "$want"; then
		log "QEMU $QEMU_SNAPSHOT_VERSION and virtiofsd $VIRTIOFSD_VERSION already in $dest"
		return 0
	fi
	rm -f "$dest/.vmm.stamp"
	tmp="$(mktemp -d "$dest/.vmm.XXXXXX")"
	mkdir -p "$tmp/qemu/bin" "$tmp/qemu/share/doc" "$tmp/qemu/share/qemu"
	cp -p "$qemu" "$tmp/qemu/bin/qemu-system-x86_64"
	cp -a --no-preserve=ownership "$firmware/." "$tmp/qemu/share/qemu/"
	cp -p "$copyright" "$tmp/qemu/share/doc/copyright"
	cp -p "$fsd" "$tmp/virtiofsd"
	cp "$sources" "$tmp/SOURCES"
	chmod 0755 "$tmp/qemu/bin/qemu-system-x86_64" "$tmp/virtiofsd"
	chmod -R u=rwX,go=rX "$tmp/qemu/share" "$tmp/SOURCES"
	# The old QEMU tree is moved aside (a QEMU starting now finds one or the
	# other), then removed.
	rm -rf "$dest/.qemu.old"
	if [[ -e $dest/qemu ]]; then mv "$dest/qemu" "$dest/.qemu.old"; fi
	mv "$tmp/qemu" "$dest/qemu"
	mv -f "$tmp/virtiofsd" "$dest/virtiofsd"
	mv -f "$tmp/SOURCES" "$dest/SOURCES"
	rm -rf "$dest/.qemu.old" "$tmp"
	echo "$want" >"$dest/.vmm.stamp"
	log "placed QEMU $QEMU_SNAPSHOT_VERSION and virtiofsd $VIRTIOFSD_VERSION into $dest"
}

if [[ $mode == install ]]; then
	src="$(cd "$2" && pwd)"
	[[ $src != "$dest" ]] || die "source and destination are the same directory ($src)"
	for f in qemu/bin/qemu-system-x86_64 qemu/share/qemu qemu/share/doc/copyright virtiofsd SOURCES .vmm.stamp; do
		[[ -e $src/$f ]] || die "$src/$f missing: run 'make build' first"
	done
	place "$(cat "$src/.vmm.stamp")" "$src/qemu/bin/qemu-system-x86_64" "$src/qemu/share/qemu" \
		"$src/qemu/share/doc/copyright" "$src/virtiofsd" "$src/SOURCES"
	exit 0
fi

# build: the pinned tools (each skipped when its stamp in TOOLS/bin matches).
"$REPO_ROOT/hack/build-tools.sh" "$2" qemu virtiofsd
tools="$(cd "$2" && pwd)"
qemu="$tools/qemu/usr/bin/qemu-system-x86_64"
firmware="$tools/qemu/usr/share/qemu"
copyright="$tools/qemu/usr/share/doc/qemu-system-common/copyright"
fsd="$tools/bin/virtiofsd"
for f in "$qemu" "$firmware" "$copyright" "$fsd" "$tools/bin/.qemu.stamp" "$tools/bin/.virtiofsd.stamp"; do
	[[ -e $f ]] || die "$f missing after hack/build-tools.sh $2 qemu virtiofsd"
done
# What was built, and which files: a rebuild gives them new times.
want="$(cat "$tools/bin/.qemu.stamp" "$tools/bin/.virtiofsd.stamp" | tr '\n' ';')$(stat -c %Y "$qemu" "$fsd" | tr '\n' ';')"
if current "$want"; then
	# The common case of make build: no checksums to compute.
	log "QEMU $QEMU_SNAPSHOT_VERSION and virtiofsd $VIRTIOFSD_VERSION already in $dest"
	exit 0
fi

sources="$(mktemp "$tools/.SOURCES.XXXXXX")"
trap 'rm -f "$sources"' EXIT
{
	echo "# The QEMU and virtiofsd gondolin's shim prefers (docs/install.md). Written by hack/vmm-bundle.sh."
	echo "qemu $QEMU_SNAPSHOT_VERSION: Debian's bookworm-backports build, unpacked from (pool path on deb.debian.org, sha256):"
	while read -r path sha; do
		[[ -z $path ]] || echo "  $path $sha"
	done <<<"$QEMU_SNAPSHOT_DEBS"
	echo "  qemu/bin/qemu-system-x86_64 sha256 $(sha256sum <"$qemu" | cut -d' ' -f1)"
	echo "virtiofsd $VIRTIOFSD_VERSION: built from trixie's crate packages with Debian 12's Rust toolchain (hack/virtiofsd/debs.lock and Cargo.lock of this repository)"
	echo "  virtiofsd sha256 $(sha256sum <"$fsd" | cut -d' ' -f1)"
} >"$sources"
place "$want" "$qemu" "$firmware" "$copyright" "$fsd" "$sources"
