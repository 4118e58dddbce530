#!/usr/bin/env bash
# Install the benchmark's tools (Debian packages: python3-venv for the bench's virtualenv on Debian's
# python3, the interpreter the image runs) and the project (make install).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends nginx-light wrk curl make python3-venv >/dev/null
make install
