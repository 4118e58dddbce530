#!/usr/bin/env bash
# Everything the test suite drives that pip cannot install into .venv: curl (streaming tests), redis-server
# (rate limits shared across replicas: tests start their own on loopback, never the service), prometheus
# (promtool checks and unit-tests the chart's alert rules; tests start their own server), chromium and
# chromium-driver (the admin status page is tested in a real headless browser), and the
# real registry servers and package clients of tests/feeds (.ci/feeds.sh). Debian packages, so it needs
# root, as on the CI machine. Idempotent: a second run only refreshes the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: needs root to install Debian packages (run as root, or install what .ci/feeds.sh lists)" >&2
  exit 1
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 curl make redis-server prometheus \
  chromium chromium-driver >/dev/null
bash .ci/feeds.sh
