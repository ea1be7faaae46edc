#!/usr/bin/env bash
# The training fault drill: a tiny run, again and again, with kill -9, a full disk and damaged
# files injected at random points, each resumed and checked for lost data (see
# glm130b/tools/fault_drill.py). Arguments go to it, e.g.
#   bash scripts/fault_drill.sh --runs 4 --output fault-drill
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec python -m glm130b.tools.fault_drill "$@"
