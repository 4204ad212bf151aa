#!/usr/bin/env bash
# deploy/container/build.sh [cpu|gpu]: build the bento and its image `ganforge-gan:<flavor>`
# (what `make container [FLAVOR=gpu]` runs).
#
#   cpu  onnxruntime (CPU): no CUDA wheels, no compiler toolchain
#   gpu  onnxruntime-gpu with the pip-installed CUDA and cuDNN libraries; after the build, the
#        image's CUDA library check (python -m gancore.cuda) runs and must pass
#
# The engine is Docker when its daemon answers, else podman; as root with apt-get, podman, runc and
# debootstrap are installed when no engine is found. Images stay in the engine's default storage;
# everything else this writes is under build/container/ and build/bentoml/. A second run reuses the
# engine's cached layers (the Python packages are installed once).
#
# Environment: PY (an interpreter with bentoml; default .venv/bin/python), ENGINE (docker|podman:
# skip the detection).
set -euo pipefail

die() {
    echo "container: $*" >&2
    exit 1
}
say() { printf '== %s\n' "$*"; }

FLAVOR=${1:-cpu}
case "$FLAVOR" in
cpu | gpu) ;;
*) die "FLAVOR=${FLAVOR@Q} is not a flavour: use cpu (the default) or gpu" ;;
esac
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD="$REPO/build/container"
PY=${PY:-$REPO/.venv/bin/python}
IMAGE="ganforge-gan:$FLAVOR"
# The rootfs and the Python layer every flavour starts from (built here, never pulled).
ROOTFS_IMAGE=localhost/ganforge-debian:bookworm
BASE_IMAGE=localhost/ganforge-base:bookworm-py3.11
PULLED_ROOTFS=docker.io/library/debian:bookworm-slim
# The GPU flavour's runtime: >= 1.21 has onnxruntime.preload_dlls(), which gancore.cuda uses.
GPU_ORT='onnxruntime-gpu[cuda,cudnn]>=1.21'

[ -x "$PY" ] || die "no Python with bentoml at ${PY@Q}: run \`make venv\` first (or set PY)"
mkdir -p "$BUILD"
t0=$SECONDS

# -- the engine -------------------------------------------------------------------------------
# podman on this kind of host: crun refuses a hybrid cgroup layout (runc works), and root may lack
# CAP_SYS_RESOURCE, so the default ulimits (1048576) must come down to the hard limits.
podman_conf() {
    local nofile nproc
    nofile=$(ulimit -Hn)
    nproc=$(ulimit -Hu)
    [[ $nofile =~ ^[0-9]+$ ]] && ((nofile <= 32768)) || nofile=32768
    [[ $nproc =~ ^[0-9]+$ ]] && ((nproc <= 32768)) || nproc=32768
    cat >"$BUILD/containers.conf.tmp" <<EOF
# Written by deploy/container/build.sh; podman reads it through CONTAINERS_CONF.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
$(command -v runc >/dev/null 2>&1 && echo 'runtime = "runc"')
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    mv "$BUILD/containers.conf.tmp" "$BUILD/containers.conf"
    export CONTAINERS_CONF=${CONTAINERS_CONF:-$BUILD/containers.conf}
}

# can_apt: root with apt-get, so missing Debian packages can be installed (as `make browser` does)
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_install() {
    say "installing Debian's $*"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; } >"$BUILD/apt.log" 2>&1 ||
        die "apt-get could not install $* (log: $BUILD/apt.log)"
}

if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null 2>&1; then
        ENGINE=podman
    elif can_apt; then
        apt_install podman runc debootstrap
        ENGINE=podman
    else
        die "no container engine: install Docker (with its daemon running) or podman (Debian: apt-get install podman runc debootstrap, as root)"
    fi
fi
case "$ENGINE" in
docker) ;;
podman)
    command -v runc >/dev/null 2>&1 || ! can_apt || apt_install runc
    podman_conf
    ;;
*) die "ENGINE=${ENGINE@Q}: use docker or podman" ;;
esac
echo "$ENGINE" >"$BUILD/engine"
say "engine: $ENGINE ($($ENGINE --version 2>/dev/null | head -n 1))"

has_image() { $ENGINE image inspect "$1" >/dev/null 2>&1; }

# -- 1. the rootfs: pulled where a registry answers, else debootstrap from the host's mirror ------
if has_image "$ROOTFS_IMAGE"; then
    FROM_IMAGE=$ROOTFS_IMAGE
elif timeout 60 $ENGINE pull -q "$PULLED_ROOTFS" >/dev/null 2>&1; then
    FROM_IMAGE=$PULLED_ROOTFS
else
    say "1/4 base: $PULLED_ROOTFS cannot be pulled here; building a Debian 12 rootfs with debootstrap"
    [ "$(id -u)" = 0 ] || die "base image: $PULLED_ROOTFS cannot be pulled and debootstrap needs root"
    command -v debootstrap >/dev/null 2>&1 || { can_apt && apt_install debootstrap; } ||
        die "base image: $PULLED_ROOTFS cannot be pulled and debootstrap is not installed (apt-get install debootstrap)"
    # The host's Debian mirror (its apt sources), else Debian's own.
    mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources \
        /etc/apt/sources.list 2>/dev/null | grep -oE 'https?://[^ ]+' | head -n 1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs="$BUILD/rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$BUILD/debootstrap.log" 2>&1 ||
        die "base image: debootstrap bookworm from $mirror failed (log: $BUILD/debootstrap.log)"
    tar -C "$rootfs" -c . | $ENGINE import - "$ROOTFS_IMAGE" >/dev/null 2>&1 ||
        die "base image: $ENGINE import of the debootstrap rootfs failed"
    rm -rf "$rootfs"
    FROM_IMAGE=$ROOTFS_IMAGE
fi

# -- 2. the Python layer: Debian's python3.11, the host's extra CAs, uv ----------------------------
say "2/4 base: $BASE_IMAGE from $FROM_IMAGE"
ctx="$BUILD/base-context"
rm -rf "$ctx"
mkdir -p "$ctx/certs"
cp "$REPO/deploy/container/Containerfile.base" "$ctx/Containerfile"
find /usr/local/share/ca-certificates -maxdepth 1 -name '*.crt' -exec cp {} "$ctx/certs/" \; 2>/dev/null || true
# The host's pip index settings, where they point at an http(s) index (a file:// one is not
# reachable from the build).
web_urls() { tr ' ' '\n' | grep -E '^https?://' | paste -sd ' ' - || true; }
index=$(printf '%s' "${PIP_INDEX_URL:-$("$PY" -m pip config get global.index-url 2>/dev/null || true)}" | web_urls)
extra=$(printf '%s' "${PIP_EXTRA_INDEX_URL:-$("$PY" -m pip config get global.extra-index-url 2>/dev/null || true)}" | web_urls)
$ENGINE build -q --network host -f "$ctx/Containerfile" --build-arg FROM_IMAGE="$FROM_IMAGE" \
    --build-arg PIP_INDEX_URL="$index" --build-arg PIP_EXTRA_INDEX_URL="$extra" \
    -t "$BASE_IMAGE" "$ctx" >"$BUILD/base.log" 2>&1 ||
    die "base image: the Python layer failed to build (log: $BUILD/base.log)"

# -- 3. the bento --------------------------------------------------------------------------------
say "3/4 bento ($FLAVOR)"
export BENTOML_HOME="$REPO/build/bentoml" BENTOML_DO_NOT_TRACK=1
bentofile="$REPO/bentofile.yaml"
if [ "$FLAVOR" = gpu ]; then
    bentofile="$BUILD/bentofile.gpu.yaml"
    sed -E "s/\"onnxruntime>=[^\"]*\"/\"$GPU_ORT\"/" "$REPO/bentofile.yaml" >"$bentofile"
    grep -qF "\"$GPU_ORT\"" "$bentofile" ||
        die "bentofile.yaml lists no \"onnxruntime>=...\" package for the gpu flavour to replace"
fi
rm -rf "$BENTOML_HOME/bentos/ganforge-gan" # one bento at a time: the image is what is kept
tag=$(cd "$REPO" && "$PY" -m bentoml build -f "$bentofile" --output tag . 2>"$BUILD/bento.log" |
    sed -n 's/^__tag__://p') || true
[ -n "$tag" ] || die "bentoml build failed (log: $BUILD/bento.log)"
echo "bento $tag"

# -- 4. the image --------------------------------------------------------------------------------
say "4/4 image $IMAGE (bentoml containerize --backend $ENGINE)"
old=$($ENGINE image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
# BentoML 1.4 copies the bento to a temp folder and then refuses the bento's own Dockerfile template
# there as "outside of the current working directory": run it from the folder that holds that temp.
mkdir -p "$BUILD/tmp"
(cd "$BUILD/tmp" && TMPDIR="$BUILD/tmp" "$PY" -m bentoml containerize "$tag" --backend "$ENGINE" \
    --opt network=host -t "$IMAGE") >"$BUILD/image-$FLAVOR.log" 2>&1 ||
    die "bentoml containerize failed (log: $BUILD/image-$FLAVOR.log)"
new=$($ENGINE image inspect --format '{{.Id}}' "$IMAGE")
if [ -n "$old" ] && [ "$old" != "$new" ]; then
    $ENGINE rmi "$old" >/dev/null 2>&1 || true # the previous build of this tag, now untagged
fi
bytes=$($ENGINE image inspect --format '{{.Size}}' "$IMAGE")
echo "$IMAGE: $((bytes / 1000000)) MB, built in $((SECONDS - t0)) s"

if [ "$FLAVOR" = gpu ]; then
    say "CUDA libraries in $IMAGE (python -m gancore.cuda)"
    $ENGINE run --rm --network none -e PYTHONPATH=/home/bentoml/bento/src "$IMAGE" \
        python -m gancore.cuda || die "$IMAGE: ONNX Runtime's CUDA provider cannot load its libraries (above)"
fi
