#!/usr/bin/env bash
# Build the sendfleet image (localhost/sendfleet:dev) as an OCI image archive
# from Debian packages and the release binary, with maintained tools only:
# mmdebstrap writes the Debian root file system, umoci writes the OCI image.
# No base image is pulled and nothing but the Debian mirror is contacted.
#
#   hack/build-image.sh [--binary PATH] [--print]
#
# Prints `image=<archive path>` and `ref=localhost/sendfleet:dev` on stdout.
# Two caches under ${SENDFLEET_CACHE:-/var/cache/sendfleet}/images/:
#   sendfleet-rootfs-<hash>/rootfs.tar  keyed by suite, mirror, package list
#   sendfleet-<hash>/sendfleet.tar      keyed by the rootfs key, the binary's
#                                       sha256 and this script
# so a rebuild with nothing changed only hashes the binary (~1 s).
# The Containerfile at the repository root builds the same image with
# Docker/Podman (bookworm-slim + the same packages + the same binary path).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SENDFLEET_CACHE:-/var/cache/sendfleet}/images
SUITE=bookworm
# What the image holds besides the binary: Postfix (the agent supervises
# `postfix start-fg` and calls postconf/postmap/postqueue), CA certificates
# for TLS to providers, tini as PID 1 (reaps orphaned Postfix processes and
# forwards signals to the agent; docs/ARCHITECTURE.md, "Postfix and the
# agent in one container"), and OpenDKIM, the DKIM signer the agent runs as
# a milter of the submission listener (its package creates the `opendkim`
# user the signer drops to; docs/ARCHITECTURE.md, "DKIM signing").
# libc etc. come with the apt variant's essentials.
PACKAGES=(postfix ca-certificates tini opendkim)
# PID 1 of every container from this image (the operator's pods name it too).
ENTRYPOINT=(/usr/bin/tini -- /usr/local/bin/sendfleet)
IMAGE_NAME=localhost/sendfleet
IMAGE_TAG=dev
BINARY=$REPO/target/release/sendfleet
PRINT_ONLY=0

while (($#)); do
  case $1 in
    --binary) BINARY=$2; shift 2 ;;
    --print) PRINT_ONLY=1; shift ;;
    *) echo "hack/build-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

[[ -x $BINARY ]] || {
  echo "hack/build-image.sh: no binary at $BINARY (run: cargo build --release --bin sendfleet)" >&2
  exit 1
}

# The Debian mirror line, from this machine's apt sources (deb822 or one-line
# format), so the image comes from the same mirror apt uses here.
mirror() {
  local m
  m=$(grep -hsE '^URIs:.*debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    head -1 | awk '{print $2}')
  [[ -n $m ]] || m=$(grep -hsE '^deb .*debian/? ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -v security | head -1 | awk '{print $2}')
  echo "${m:-http://deb.debian.org/debian}"
}
MIRROR=$(mirror)

rootfs_key=$(printf '%s\n' "$SUITE" "$MIRROR" "${PACKAGES[@]}" rootfs-v1 | sha256sum | cut -c1-16)
bin_sum=$(sha256sum "$BINARY" | cut -c1-64)
script_sum=$(sha256sum "$0" | cut -c1-64)
image_key=$(printf '%s\n' "$rootfs_key" "$bin_sum" "$script_sum" | sha256sum | cut -c1-16)
ROOTFS=$CACHE/sendfleet-rootfs-$rootfs_key/rootfs.tar
OUT=$CACHE/sendfleet-$image_key/sendfleet.tar

print() {
  echo "image=$OUT"
  echo "ref=$IMAGE_NAME:$IMAGE_TAG"
  echo "base_name=$IMAGE_NAME"
}

if [[ -f $OUT ]]; then print; exit 0; fi
if ((PRINT_ONLY)); then print; exit 1; fi

need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v umoci >/dev/null || need+=(umoci)
if ((${#need[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]} (image build) ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
  else
    echo "hack/build-image.sh: need ${need[*]} (apt-get install -y ${need[*]})" >&2
    exit 1
  fi
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.sendfleet-image.lock"
flock 9
if [[ -f $OUT ]]; then print; exit 0; fi
started=$SECONDS

if [[ ! -f $ROOTFS ]]; then
  echo "building Debian $SUITE root file system (${PACKAGES[*]}) from $MIRROR ..." >&2
  mkdir -p "$(dirname "$ROOTFS")"
  # --skip=output/dev: no device nodes in the layer (the runtime provides
  # /dev). Docs, man pages and apt lists are dropped to keep the layer small.
  inc=$(IFS=,; echo "${PACKAGES[*]}")
  # One retry: a download or a dpkg step in the chroot has failed once
  # here for no reason a second run saw; the log of a failed run is printed.
  for attempt in 1 2; do
    if mmdebstrap --format=tar --variant=apt --include="$inc" --skip=output/dev \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
      "$SUITE" "$ROOTFS.tmp" "deb $MIRROR $SUITE main" >"$ROOTFS.log" 2>&1; then
      break
    fi
    echo "mmdebstrap failed (attempt $attempt); its log:" >&2
    tail -40 "$ROOTFS.log" >&2
    ((attempt < 2)) || exit 1
  done
  mv -f "$ROOTFS.tmp" "$ROOTFS"
  echo "root file system: $(du -h "$ROOTFS" | cut -f1) in $((SECONDS - started)) s" >&2
fi

tmp=$(mktemp -d "$CACHE/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "writing image $IMAGE_NAME:$IMAGE_TAG with umoci ..." >&2
# Layer 2: the binary alone (strip a copy: the release profile keeps symbols),
# so a new binary changes one small layer and the Debian layer stays as is.
mkdir -p "$tmp/bin-layer/usr/local/bin"
cp "$BINARY" "$tmp/bin-layer/usr/local/bin/sendfleet"
strip "$tmp/bin-layer/usr/local/bin/sendfleet" 2>/dev/null || true
chmod 0755 "$tmp/bin-layer/usr/local/bin/sendfleet"
tar --numeric-owner --owner=0 --group=0 -C "$tmp/bin-layer" -cf "$tmp/bin.tar" ./usr

umoci init --layout "$tmp/oci"
umoci new --image "$tmp/oci:$IMAGE_TAG"
umoci raw add-layer --image "$tmp/oci:$IMAGE_TAG" --history.created_by "mmdebstrap $SUITE ${PACKAGES[*]}" "$ROOTFS"
umoci raw add-layer --image "$tmp/oci:$IMAGE_TAG" --history.created_by "sendfleet binary $bin_sum" "$tmp/bin.tar"
entrypoint_args=()
for e in "${ENTRYPOINT[@]}"; do entrypoint_args+=(--config.entrypoint "$e"); done
umoci config --image "$tmp/oci:$IMAGE_TAG" \
  "${entrypoint_args[@]}" \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.workingdir / \
  --config.label org.opencontainers.image.title=sendfleet \
  --config.label io.sendfleet.binary.sha256="$bin_sum" \
  --architecture "$(dpkg --print-architecture)" --os linux
umoci gc --layout "$tmp/oci"
mkdir -p "$(dirname "$OUT")"
tar -C "$tmp/oci" -cf "$OUT.tmp" . && mv -f "$OUT.tmp" "$OUT"
echo "image $IMAGE_NAME:$IMAGE_TAG: $OUT ($(du -h "$OUT" | cut -f1)) in $((SECONDS - started)) s" >&2
print
