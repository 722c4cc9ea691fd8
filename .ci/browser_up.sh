#!/usr/bin/env bash
# Install a headless browser for the report test (tests/test_report_browser.py): Debian's
# chromium and chromium-driver; selenium comes with the test extras (pyproject.toml).
#
#   sudo .ci/browser_up.sh      (root is required: it installs packages)
#
# Idempotent: installs only what is missing. Prints the chromedriver path on success.
set -euo pipefail

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "[browser_up] installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
command -v chromedriver
