#!/usr/bin/env bash
# Build the local, registry-free base image localhost/debian-minbase:bookworm:
# debootstrap minbase + python3 + python3-venv, imported into podman.
# Needs root, debootstrap and podman (apt-get install podman buildah runc debootstrap).
# Usage: packaging/make_base_image.sh [IMAGE] [ROOTFS_DIR]
set -euo pipefail
IMAGE="${1:-localhost/debian-minbase:bookworm}"
ROOTFS="${2:-build/debian-minbase-rootfs}"
SUITE=bookworm
HERE="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$HERE/containers.conf}"
export CONTAINERS_STORAGE_CONF="${CONTAINERS_STORAGE_CONF:-$HERE/storage.conf}"

if podman image exists "$IMAGE"; then
    echo "base image $IMAGE already present"
    exit 0
fi

# Mirror: the first Debian URI of the machine's apt sources (deb822 or one-line format).
MIRROR="${DEBIAN_MIRROR:-}"
if [ -z "$MIRROR" ]; then
    MIRROR=$( (grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
               grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}') \
             | grep -E '/debian/?$' | head -n1 || true)
fi
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
echo "debootstrap $SUITE from $MIRROR into $ROOTFS"

rm -rf "$ROOTFS"
mkdir -p "$ROOTFS"
debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$ROOTFS" "$MIRROR"
# Keep the image small: no apt lists, caches or docs.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*
tar -C "$ROOTFS" --numeric-owner -c . | podman import \
    --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE"
rm -rf "$ROOTFS"
podman image ls "$IMAGE"
