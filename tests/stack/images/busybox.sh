#!/usr/bin/env bash
# Recipe of the tiny image flowstate-test/busybox:<hash of this file + /bin/busybox>.
# A root file system with only Debian's static busybox and a link for each of its applets
# (sh, httpd, wget, sleep, cat, echo, date, ...).  Called by ../up.
# Usage: busybox.sh OUT_TAR
set -euo pipefail
out_tar=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"/{bin,etc,tmp,root,proc,sys,dev,var/www,run}
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n' >"$root/etc/group"
printf 'hosts: files\n' >"$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
tar --numeric-owner -C "$root" -cf "$out_tar.tmp" .
mv "$out_tar.tmp" "$out_tar"
