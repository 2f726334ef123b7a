#!/usr/bin/env bash
# nnU-Net lane (run by .ci/run after the main suite): builds .venv-nnunet (scripts/setup_nnunet_env.sh: nnunetv2
# 2.8.1 layered on the project's .venv), then runs tests/test_nnunet_plugin.py there with NNUNET_LANE=1 (a missing
# nnunetv2 is then an error, not a skip): nnU-Net's own plan_and_preprocess, train and predict commands on tiny
# phantoms, one thread. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
start=$SECONDS
bash "$root/scripts/setup_env.sh"
bash "$root/scripts/setup_nnunet_env.sh"
echo "nnunet lane: environment ready after $((SECONDS - start)) s"
cd "$root"
NNUNET_LANE=1 OMP_NUM_THREADS=1 "$root/.venv-nnunet/bin/python" -m pytest -p no:cacheprovider \
    tests/test_nnunet_plugin.py "$@"
echo "nnunet lane: done in $((SECONDS - start)) s"
