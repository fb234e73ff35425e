#!/usr/bin/env bash
# Recipe of the local base image flowstate-bot/base:<hash of this file>: Debian bookworm
# (minbase) with Debian's Python 3.11, its venv module and the CA certificates, written as a
# tarball for `docker import`.  It stands in for the official python:3.11-slim image, which no
# registry here can give.  Called by ./build.
# Usage: base.sh OUT_TAR MIRROR CACHE_DIR
set -euo pipefail
out_tar=$1 mirror=$2 cache=$3
packages=python3,python3-venv,ca-certificates

work="$cache/bot-base-rootfs.$$"
trap 'rm -rf "$work"' EXIT
rm -rf "$work"
mkdir -p "$work" "$cache/debs"
debootstrap --variant=minbase --cache-dir="$cache/debs" --include="$packages" \
    bookworm "$work/rootfs" "$mirror" >&2

root="$work/rootfs"
# No package mirror at run time; documentation and the apt lists only make the image bigger.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
umount "$root/proc" "$root/sys" 2>/dev/null || true
tar --numeric-owner -C "$root" -cf "$out_tar.tmp" .
mv "$out_tar.tmp" "$out_tar"
