#!/usr/bin/env bash
# Make a base image for the sandbox where no image registry is reachable: a minimal
# Debian root filesystem with Python (debootstrap), imported with `docker import`.
#   sandbox/debootstrap-base.sh [TAG]          (default TAG: scientist-base:<suite>)
# then: scientist sandbox build --base TAG
# Needs root, debootstrap and a running Docker daemon. The Debian mirror and suite are
# this machine's own (its apt sources and /etc/os-release), so it works behind the same
# package mirror as apt does.
set -euo pipefail
suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
suite=${suite:-bookworm}
tag=${1:-scientist-base:$suite}
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
         | grep -v -- '-security' | head -n1 || true)
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
root=$(mktemp -d /tmp/scientist-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap $suite (minbase + python3, python3-venv) from ${mirror:-the default mirror}"
debootstrap --variant=minbase --include=python3,python3-venv "$suite" "$root" ${mirror:+"$mirror"} >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$tag" >/dev/null
echo "imported $tag"
