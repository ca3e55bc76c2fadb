#!/usr/bin/env bash
# Puts Debian bookworm's promtool (from the `prometheus` package, statically linked) at $1, without
# installing the Prometheus server: `apt-get download` + `dpkg-deb -x` into a scratch directory.
# The version is pinned; a fresh machine of the project's kind may need its package lists first.
set -euo pipefail
destination=$(realpath -m "${1:?usage: fetch-promtool.sh DESTINATION}")
version=${PROMETHEUS_DEB_VERSION:-2.42.0+ds-5+deb12u1}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
if ! apt-get download "prometheus=$version" >/dev/null 2>&1; then
    echo "fetch-promtool: refreshing apt's package lists" >&2
    apt-get update -qq
    apt-get download "prometheus=$version"
fi
dpkg-deb -x prometheus_*.deb extracted
mkdir -p "$(dirname "$destination")"
install -m 0755 extracted/usr/bin/promtool "$destination"
"$destination" --version | head -1
