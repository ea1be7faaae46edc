#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install what it needs.
# CPU machines get torch 2.13.0 first (a CPU build from local disk) so that no other
# requirement pulls a multi-GB CUDA build; set GLM_TORCH_SPEC to choose another torch.
# Sourced by the other scripts; prints nothing when the environment is already up to date.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GLM_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
stamp="$VENV/.glm130b-installed"
want="$(cat "$ROOT/requirements.txt" "$ROOT/setup.py" "$ROOT/scripts/setup_env.sh" | sha1sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  log="$VENV/install.log"
  echo ">> installing into $VENV (log: $log)"
  if [ -z "${GLM_TORCH_SPEC:-}" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    GLM_TORCH_SPEC="torch==2.13.0"
  fi
  {
    if [ -n "${GLM_TORCH_SPEC:-}" ]; then "$VENV/bin/pip" install "$GLM_TORCH_SPEC"; fi &&
    "$VENV/bin/pip" install -r "$ROOT/requirements.txt" pytest ruff matplotlib openai &&
    "$VENV/bin/pip" install --no-deps -e "$ROOT"
  } > "$log" 2>&1 || { tail -n 30 "$log" >&2; echo "error: installation failed, see $log" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
export DS_ACCELERATOR="${DS_ACCELERATOR:-$(command -v nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)}"
