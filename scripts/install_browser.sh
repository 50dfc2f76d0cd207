#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests when missing and when we may (root).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "chromium missing and not root: browser tests will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core libegl1 libgl1-mesa-dri >/dev/null
