#!/usr/bin/env bash
# Creates .venv in the repository root (once) and installs the pinned requirements into it.
# Re-running is cheap: pip is skipped while the requirement files are unchanged.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv with $("$python" --version)"
    "$python" -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want="$(cat "$root/requirements.txt" "$root/requirements-dev.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing pinned requirements (first run takes a few minutes)"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # torch first and on its own, so that nothing else can pull a different (CUDA) build.
    "$venv/bin/python" -m pip install --quiet "$(grep -E '^torch==' "$root/requirements.txt")"
    "$venv/bin/python" -m pip install --quiet -r "$root/requirements-dev.txt"
    echo "$want" >"$stamp"
fi
