#!/usr/bin/env bash
# Creates .venv in the repository root (once) and installs the pinned requirements into it.
# Re-running is cheap: pip is skipped while the requirement files are unchanged.
#
# torch: the CPU build where no NVIDIA GPU answers (nvidia-smi absent or failing), so that a laptop or a CPU server
# does not download several GB of CUDA libraries; the default build (CUDA on Linux) where one does.
# Environment: PYTHON (interpreter for the venv), VENV (venv folder, default .venv), TORCH_BUILD (auto, cpu or cuda),
# TORCH_CPU_INDEX (a mirror of PyTorch's CPU wheel index).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
venv="${VENV:-$root/.venv}"
torch_build="${TORCH_BUILD:-auto}"
cpu_index="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"

if [ "$torch_build" = auto ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        torch_build=cuda
    else
        torch_build=cpu
    fi
fi
case "$torch_build" in
    cpu | cuda) ;;
    *) echo "setup: TORCH_BUILD must be auto, cpu or cuda, got '$torch_build'" >&2 && exit 2 ;;
esac

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv with $("$python" --version)"
    "$python" -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want="$(cat "$root/requirements.txt" "$root/requirements-dev.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing pinned requirements (first run takes a few minutes)"
    pip=("$venv/bin/python" -m pip)
    "${pip[@]}" install --quiet --upgrade pip
    torch_pin="$(grep -E '^torch==' "$root/requirements.txt")"
    # torch first and on its own, so that nothing else can pull a different build; the rest then finds it satisfied
    # (2.13.0+cpu satisfies torch==2.13.0). A venv that has the pinned torch keeps its build: delete it to switch.
    if [ "$torch_build" = cuda ]; then
        echo "setup: NVIDIA GPU found: $torch_pin, default (CUDA) build"
        "${pip[@]}" install --quiet "$torch_pin"
    elif "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('$cpu_index/torch/', timeout=15)" \
        >/dev/null 2>&1; then
        echo "setup: no NVIDIA GPU: $torch_pin, CPU build from PyTorch's index"
        "${pip[@]}" install --quiet --index-url "$cpu_index" "$torch_pin"
    else
        echo "setup: no NVIDIA GPU, but PyTorch's index ($cpu_index) cannot be reached: $torch_pin from the default" \
            "index instead (on Linux that is the CUDA build, several GB, unless a CPU wheel is cached or configured)"
        "${pip[@]}" install --quiet "$torch_pin"
    fi
    "${pip[@]}" install --quiet -r "$root/requirements-dev.txt"
    echo "$want" >"$stamp"
fi
