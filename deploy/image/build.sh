#!/bin/sh
# Build the s13eir container image with podman (or docker).
#
#   sh deploy/image/build.sh            # s13eir:<version>, tagged s13eir:latest too
#   BASE=python:3.11-slim sh deploy/image/build.sh
#
# The Dockerfile takes its base image as a build argument. When BASE is not given and
# the default base cannot be found locally or pulled (no registry reachable), a Debian
# bookworm base is built from Debian's own packages with mmdebstrap and imported as
# s13eir-base:bookworm; it is reused until removed (`podman rmi s13eir-base:bookworm`).
set -eu
cd "$(dirname "$0")/../.."

ENGINE=${ENGINE:-$(command -v podman || command -v docker || true)}
[ -n "$ENGINE" ] || { echo "build.sh: needs podman (apt-get install podman) or docker" >&2; exit 1; }
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' src/s13eir/__init__.py)
IMAGE=${IMAGE:-s13eir:$VERSION}
DEFAULT_BASE=python:3.11-slim
DEBIAN_BASE=s13eir-base:bookworm
MIRROR=${MIRROR:-http://deb.debian.org}

have_image() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

debian_base() {
  have_image "$DEBIAN_BASE" && return 0
  command -v mmdebstrap >/dev/null 2>&1 || {
    echo "build.sh: $DEFAULT_BASE is not available and mmdebstrap is missing (apt-get install mmdebstrap)" >&2
    exit 1
  }
  echo "build.sh: building $DEBIAN_BASE from Debian bookworm packages (mmdebstrap)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # minbase + python3: the runtime needs nothing else (no compiler: every locked
  # dependency ships a wheel). Documentation, manuals and locales are left out.
  SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)} \
  mmdebstrap --variant=minbase --include=python3,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --format=tar bookworm "$tmp/rootfs.tar" \
    "deb $MIRROR/debian bookworm main" \
    "deb $MIRROR/debian bookworm-updates main" \
    "deb $MIRROR/debian-security bookworm-security main"
  "$ENGINE" import --change 'CMD ["/bin/sh"]' "$tmp/rootfs.tar" "$DEBIAN_BASE" >/dev/null
}

if [ -z "${BASE:-}" ]; then
  if have_image "$DEFAULT_BASE" || timeout 20 "$ENGINE" pull -q "$DEFAULT_BASE" >/dev/null 2>&1; then
    BASE=$DEFAULT_BASE
  else
    debian_base
    BASE=$DEBIAN_BASE
  fi
fi

echo "build.sh: building $IMAGE on $BASE"
start=$(date +%s)
# --format docker: the OCI format has no HEALTHCHECK.
if [ "$(basename "$ENGINE")" = podman ]; then fmt="--format docker"; else fmt=""; fi
# Where the OCI runtime cannot start a container (a sandbox refusing cgroups or
# rlimits), podman runs the build steps in a chroot instead (ISOLATION=chroot forces it).
if [ -z "${ISOLATION:-}" ] && [ -n "$fmt" ] && \
   ! "$ENGINE" run --rm --entrypoint /bin/true "$BASE" >/dev/null 2>&1; then
  echo "build.sh: $ENGINE cannot run containers here; build steps run with --isolation chroot"
  ISOLATION=chroot
fi
isolation=${ISOLATION:+--isolation $ISOLATION}
# The build steps download the locked wheels (hash-checked) from the package index. They
# trust the CA bundle of the machine that builds (mounted into the build steps only, never
# copied into the image), so that a build behind a TLS-inspecting proxy works as the
# host does. CA_BUNDLE= (empty) uses the base image's own bundle.
CA_BUNDLE=${CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
cavol=""
[ -n "$CA_BUNDLE" ] && [ -f "$CA_BUNDLE" ] && cavol="--volume $CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro"
# shellcheck disable=SC2086
"$ENGINE" build $fmt $isolation $cavol --build-arg BASE="$BASE" --build-arg VERSION="$VERSION" \
  ${EXPOSE_SCTP+--build-arg EXPOSE_SCTP="$EXPOSE_SCTP"} \
  --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  -t "$IMAGE" -t s13eir:latest .
end=$(date +%s)
size=$("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE")
echo "build.sh: $IMAGE built in $((end - start)) s, $((size / 1000000)) MB (base $BASE)"
