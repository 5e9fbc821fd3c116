#!/bin/sh
# Makes the Python base image the Dockerfiles build FROM, out of Debian packages, for sites where no
# container registry is reachable (air-gapped hospital networks) but a Debian mirror is:
#
#   docker/python-base-image.sh [--mirror URL] [--suite SUITE] [--tag NAME] [--engine docker|podman]
#   PYTHON_IMAGE=NAME docker compose build      # the name printed at the end
#
#   --mirror   the Debian mirror to install from (default: the one this host's apt uses, read from
#              /etc/apt/sources.list and /etc/apt/sources.list.d; required on a host without apt)
#   --suite    the Debian release (default bookworm: Python 3.11, the version the images are tested with)
#   --tag      the image's name (default arterys-grpc-bridge/python-base:3.11-SUITE; do not call it
#              docker.io/library/python:...: that would hide the real image of that name on this host)
#   --engine   docker (default) or podman
#
# The image holds Debian's minimal base plus python3, python3-venv (the Dockerfiles make a virtualenv),
# python-is-python3 and ca-certificates, so the Dockerfiles build from it unchanged. Needs root,
# debootstrap and debian-archive-keyring (apt-get install debootstrap). About a minute; nothing is left
# behind but the image.
set -eu

suite=bookworm
mirror=""
tag=""
engine=docker

usage() { sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --mirror) mirror="$2"; shift 2 ;;
    --suite) suite="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --engine) engine="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "python-base-image.sh: unknown argument $1" >&2; usage 2 >&2 ;;
  esac
done
tag="${tag:-arterys-grpc-bridge/python-base:3.11-$suite}"

# The first Debian archive (one that serves the suite's main component) this host's apt is configured
# with, in the one-line or the deb822 format.
host_mirror() {
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -r "$file" ] || continue
    case "$file" in
      *.sources)
        awk -v suite="$suite" '
          /^[[:space:]]*$/ { if (uri != "" && suites ~ ("(^| )" suite "( |$)") && comps ~ /(^| )main( |$)/) { print uri; exit }
                             uri = ""; suites = ""; comps = ""; next }
          tolower($1) == "uris:" { uri = $2 }
          tolower($1) == "suites:" { $1 = ""; suites = $0 " " }
          tolower($1) == "components:" { $1 = ""; comps = $0 " " }
          END { if (uri != "" && suites ~ ("(^| )" suite "( |$)") && comps ~ /(^| )main( |$)/) print uri }' "$file" ;;
      *)
        awk -v suite="$suite" '
          $1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                        if ($(i + 1) == suite) { for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit } } }' "$file" ;;
    esac
  done | head -n 1
}

if [ -z "$mirror" ]; then
  mirror="$(host_mirror)"
  if [ -z "$mirror" ]; then
    echo "python-base-image.sh: no apt source for $suite found on this host: name the Debian mirror with --mirror URL" >&2
    exit 2
  fi
fi
command -v debootstrap >/dev/null || { echo "python-base-image.sh: debootstrap is missing (apt-get install debootstrap)" >&2; exit 2; }
command -v "$engine" >/dev/null || { echo "python-base-image.sh: $engine is missing" >&2; exit 2; }

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/python-base.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT INT TERM

echo "python-base-image.sh: debootstrap $suite from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { cat "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
# Only what an image needs: no package lists, caches or logs of the installation.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.cache

tar -C "$rootfs" --numeric-owner -c . | "$engine" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$tag" >/dev/null
echo "python-base-image.sh: made $tag; build with: PYTHON_IMAGE=$tag docker compose build"
