#!/usr/bin/env bash
# Builds .venv-nnunet in the repository root for the nnU-Net plugin (bundle/nnunet) and its test lane: a virtual
# environment layered on the project's .venv (a .pth file puts .venv's site-packages after its own) holding
# requirements-nnunet.txt, installed with --no-deps, so torch, monai and every other pin of requirements.txt come from
# .venv unchanged and pip never resolves torch.
# torchvision (needed because nnU-Net imports its Primus trainers, and with them timm, whenever it looks up a trainer
# by name): PyPI's Linux wheel is the CUDA build, whose C++ ops cannot load against the CPU build of torch. With a CPU
# torch it is taken from PyTorch's CPU index; where that index cannot be reached, the PyPI wheel's two unguarded op
# registrations are guarded (the same fix as tests/monailabel/patch_site_packages.py); only torchvision's C++ ops,
# which nnU-Net does not use, stay unavailable.
# Re-running is cheap: nothing is done while the requirement files and this script are unchanged.
# Environment: TORCH_CPU_INDEX (a mirror of PyTorch's CPU wheel index).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-nnunet"
cpu_index="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
# shellcheck source=scripts/layered_venv.sh
source "$root/scripts/layered_venv.sh"
layered_venv "nnunet env" "$venv" "$root/requirements-nnunet.txt" nnUNetv2_train "${BASH_SOURCE[0]}"
if [ "$layered_venv_fresh" = 1 ]; then
    exit 0
fi
pip=("$root/.venv/bin/python" -m pip --python "$venv/bin/python" --disable-pip-version-check)
tv_pin="$(grep -E '^torchvision==' "$root/requirements-nnunet.txt")"
if ! "$venv/bin/python" -c "import torchvision" >/dev/null 2>&1; then
    if "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('$cpu_index/torchvision/', timeout=15)" \
        >/dev/null 2>&1; then
        echo "nnunet env: CPU torch: $tv_pin from PyTorch's CPU index"
        PIP_NO_CACHE_DIR=1 "${pip[@]}" install --quiet --no-deps --force-reinstall --index-url "$cpu_index" "$tv_pin"
    else
        echo "nnunet env: CPU torch and no CPU index: guarding torchvision's nms/qnms registrations"
        "$venv/bin/python" - "$site/torchvision/_meta_registrations.py" <<'PY'
import sys
from pathlib import Path

path = Path(sys.argv[1])
guard = "@(torch.library.register_fake if torchvision.extension._has_ops() else lambda *_a, **_k: lambda fn: fn)("
text = path.read_text()
for op in ("nms", "qnms"):
    old = f'@torch.library.register_fake("torchvision::{op}")'
    if text.count(old) != 1:
        raise SystemExit(f"{path}: expected one {old!r} (torchvision version changed?)")
    text = text.replace(old, f'{guard}"torchvision::{op}")')
path.write_text(text)
PY
    fi
fi
# sanity: the project's torch/monai are the ones seen, nnU-Net finds its trainers (importing all of them) and ours
"$venv/bin/python" - <<'EOF'
from importlib.metadata import version

import monai
import torch
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

if not torch.__version__.startswith("2.13.0") or monai.__version__ != "1.6.1":
    raise SystemExit(f"unexpected torch {torch.__version__} / monai {monai.__version__} in .venv-nnunet")
recursive_find_trainer_class_by_name("nnUNetTrainerNoDeepSupervision")
print(f"nnunet env: nnunetv2 {version('nnunetv2')}, "
      f"torch {torch.__version__}, monai {monai.__version__}")
EOF
echo "$want" >"$stamp"
