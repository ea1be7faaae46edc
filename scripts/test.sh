#!/usr/bin/env bash
# README's second command: install what the tests need, then run them all on CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
# The playground's browser test drives Debian's Chromium; install it once where we may.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
        && [ "$(id -u)" = 0 ]; then
  log="$VENV/chromium-install.log"
  echo ">> installing chromium for the browser test (log: $log)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y --no-install-recommends chromium ||
    { apt-get update && apt-get install -y --no-install-recommends chromium; }; } > "$log" 2>&1 ||
    echo "warning: chromium could not be installed; the browser test will be skipped" >&2
fi
ruff check glm130b tests benchmarks
exec python -m pytest -q "$@" tests
