#!/usr/bin/env bash
# Builds .venv-monailabel in the repository root: a virtual environment layered on the project's .venv (a .pth file
# puts .venv's site-packages after its own), holding MONAI Label and the subset of its dependencies that its bundle
# tasks and server import, installed with --no-deps from tests/monailabel/requirements.txt (exact pins). torch,
# monai and every other runtime pin therefore come from requirements.txt, unchanged; pip never resolves torch.
# Re-running is cheap: pip is skipped while requirements.txt, this lane's requirements and patches are unchanged.
# Nothing is cached outside the repository folder (pip's cache is off).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/tests/monailabel"
venv="$root/.venv-monailabel"
# shellcheck source=../../scripts/layered_venv.sh
source "$root/scripts/layered_venv.sh"
layered_venv "monailabel lane" "$venv" "$here/requirements.txt" monailabel "$here/patch_site_packages.py" \
    "${BASH_SOURCE[0]}"
if [ "$layered_venv_fresh" = 1 ]; then
    exit 0
fi
"$venv/bin/python" "$here/patch_site_packages.py" "$site"
# sanity: the project's torch/monai are the ones seen, and MONAI Label's bundle tasks and server import.
"$venv/bin/python" - <<'EOF'
import monai
import torch

import monailabel
import monailabel.app  # noqa: F401  (the server's FastAPI app module: every endpoint)
from monailabel.tasks.infer.bundle import BundleInferTask  # noqa: F401
from monailabel.tasks.train.bundle import BundleTrainTask  # noqa: F401

if not torch.__version__.startswith("2.13.0") or monai.__version__ != "1.6.1":
    raise SystemExit(f"unexpected torch {torch.__version__} / monai {monai.__version__} in the lane venv")
print(f"monailabel lane: monailabel {monailabel.__version__}, torch {torch.__version__}, monai {monai.__version__}")
EOF
echo "$want" >"$stamp"
