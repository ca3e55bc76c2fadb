#!/usr/bin/env bash
# Builds local stand-ins for the two base images deploy/Dockerfile names, for machines that can
# reach Debian's mirror but no container registry (the project's CI kind). Not needed where
# docker.io can be pulled.
#
#   runtime stand-in  localhost/cardsync-offline/debian:bookworm-slim
#       `debootstrap --variant=minbase bookworm`: the same recipe Debian's official
#       debian:bookworm-slim is made from (debuerreotype), without its doc/man trimming.
#   builder stand-in  localhost/cardsync-offline/rust:<version>-slim-bookworm
#       the same minbase plus gcc, libc6-dev and ca-certificates (what rust:*-slim-bookworm adds),
#       and this machine's Rust toolchain (rustc, cargo, rust-std) copied to /usr/local, laid out
#       and put on PATH as the official rust image does. rustup itself is not included. Its CA
#       bundle is the host's (see below).
#
# Usage: deploy/image/offline-bases.sh   (root; needs debootstrap and podman)
# Then:  make image IMAGE_BUILD_ARGS="--build-arg RUST_IMAGE=localhost/cardsync-offline/rust:1.95-slim-bookworm \
#            --build-arg RUNTIME_IMAGE=localhost/cardsync-offline/debian:bookworm-slim"
set -euo pipefail

WORK=${OFFLINE_BASES_DIR:-/var/tmp/cardsync-offline-bases}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
TOOLCHAIN=$(rustc --print sysroot)
RUST_VERSION=$(rustc --version | awk '{print $2}' | cut -d. -f1,2)
RUNTIME_TAG=localhost/cardsync-offline/debian:${SUITE}-slim
BUILDER_TAG=localhost/cardsync-offline/rust:${RUST_VERSION}-slim-${SUITE}

for tool in debootstrap podman rustc; do
    command -v "$tool" >/dev/null || { echo "offline-bases: $tool is missing (apt-get install debootstrap podman)" >&2; exit 1; }
done
mkdir -p "$WORK"

bootstrap() { # dir [packages]
    local dir=$1 include=${2:-}
    if [[ -f $dir/.complete ]]; then return; fi
    rm -rf "$dir"
    debootstrap --variant=minbase ${include:+--include=$include} "$SUITE" "$dir" "$MIRROR" >"$dir.log" 2>&1 \
        || { tail -20 "$dir.log" >&2; exit 1; }
    # Debian's container images carry the security and updates suites too (debootstrap
    # writes only the release), and no package lists or caches.
    rm -f "$dir/etc/apt/sources.list"
    cat >"$dir/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
    touch "$dir/.complete"
}

import() { # dir tag [--change ...]
    local dir=$1 tag=$2; shift 2
    tar --numeric-owner --exclude=./.complete -C "$dir" -c . | podman import "$@" - "$tag" >/dev/null
    echo "offline-bases: $tag"
}

bootstrap "$WORK/runtime" &
bootstrap "$WORK/builder" ca-certificates,gcc,libc6-dev &
wait %1 && wait %2

import "$WORK/runtime" "$RUNTIME_TAG" --change 'CMD ["bash"]'

# The toolchain, without docs and source (the image's rust has neither).
rm -rf "$WORK/builder/usr/local/rust"
mkdir -p "$WORK/builder/usr/local/rust" "$WORK/builder/usr/local/cargo/bin"
tar -C "$TOOLCHAIN" --exclude=./share/doc --exclude=./lib/rustlib/src --exclude=./lib/rustlib/rustc-src -c . | tar -C "$WORK/builder/usr/local/rust" -x
for bin in cargo rustc rustdoc; do
    ln -sf ../../rust/bin/$bin "$WORK/builder/usr/local/cargo/bin/$bin"
done
# This machine reaches crates.io through a TLS-intercepting proxy whose CA is only in the host's
# trust store: the builder (cargo fetching crates) gets the host's bundle. The runtime stand-in
# keeps Debian's own, as the real image does.
cp /etc/ssl/certs/ca-certificates.crt "$WORK/builder/etc/ssl/certs/ca-certificates.crt"
import "$WORK/builder" "$BUILDER_TAG" \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]'
