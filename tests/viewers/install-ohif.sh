#!/usr/bin/env bash
# Installs the OHIF viewer's built app into tests/viewers/ohif/ (npm's @ohif/app ships it in dist/), for
# tests/test_dicom_viewers.py. An install-time step: the tests never download anything. Run by `make system-tools`.
#
# `npm pack` fetches the package alone (through npm's cache: a second run works offline): `npm install
# @ohif/app` cannot work, one of its own dependencies (@ohif/i18n@3.13.2) is not published, and the built
# app needs none of them.
set -euo pipefail
VERSION=3.13.2
target="$(cd "$(dirname "$0")" && pwd)/ohif"
if [ -f "$target/VERSION" ] && [ "$(cat "$target/VERSION")" = "$VERSION" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm is needed to install the OHIF viewer: apt-get install -y npm" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent --prefer-offline "@ohif/app@$VERSION" >/dev/null)
mkdir -p "$work/app"
tar -xzf "$work/ohif-app-$VERSION.tgz" -C "$work/app" --strip-components=2 package/dist
echo "$VERSION" > "$work/app/VERSION"
rm -rf "$target"
mv "$work/app" "$target"
echo "OHIF viewer $VERSION installed in $target"
