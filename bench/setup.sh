#!/usr/bin/env bash
# Install the benchmark's tools (Debian packages) and the project (make install).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends nginx-light wrk curl make >/dev/null
make install
