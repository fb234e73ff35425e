#!/usr/bin/env bash
# Recipe of the Debian image flowstate-test/debian:<hash of this file>.
# Builds a bookworm root file system with real PostgreSQL 15, Redis and nginx and
# writes it as a tarball for `docker import`.  Called by ../up; changing this file
# changes the image tag, so the next `up` rebuilds.
# Usage: debian.sh OUT_TAR MIRROR CACHE_DIR
set -euo pipefail
out_tar=$1 mirror=$2 cache=$3
packages=postgresql-15,redis-server,nginx-light,busybox,procps

work="$cache/debian-rootfs.$$"
trap 'rm -rf "$work"' EXIT
rm -rf "$work"
mkdir -p "$work" "$cache/debs"
debootstrap --variant=minbase --cache-dir="$cache/debs" --include="$packages" \
    bookworm "$work/rootfs" "$mirror" >&2

root="$work/rootfs"
# The postgresql-common postinst creates a cluster "main" on port 5432; the stack runs its
# own data directory instead, and a second cluster would only confuse pg_wrapper.
if [ -d "$root/etc/postgresql/15/main" ]; then
    chroot "$root" pg_dropcluster 15 main >&2 || rm -rf "$root/etc/postgresql/15/main" "$root/var/lib/postgresql/15/main"
fi
# Nothing in the rootfs may point at a package mirror at run time (no network anyway).
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
# Keep proc/sys/dev empty: docker mounts its own.
umount "$root/proc" "$root/sys" 2>/dev/null || true
tar --numeric-owner -C "$root" -cf "$out_tar.tmp" .
mv "$out_tar.tmp" "$out_tar"
