#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests when it is missing (never `playwright install`).
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "setup_browser: chromium is missing and this user cannot install it; browser tests will be skipped" >&2
  exit 0
fi
echo "setup_browser: installing Debian chromium…" >&2
$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium >/dev/null
