#!/usr/bin/env bash
# MONAI Label lane (run by .ci/run after the main suite): builds .venv-monailabel (MONAI Label 0.8.5 on top of the
# project's .venv, see tests/monailabel/setup_venv.sh), then runs tests/monailabel: MONAI Label's BundleInferTask and
# BundleTrainTask on this bundle placed in the monaibundle sample app, and a real `monailabel start_server` answering
# one /infer request on 127.0.0.1.
# Offline: where the kernel allows it (root, or unprivileged user namespaces) the tests run in a new network
# namespace that has only the loopback interface, so nothing can reach the network; elsewhere they run normally with
# the HTTP(S) proxy pointed at a closed local port (requests-based downloads then fail at once) and a notice says so.
# Extra arguments go to pytest. Everything is written inside the repository folder or a temporary folder.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
start=$SECONDS
bash "$root/scripts/setup_env.sh"
bash "$root/tests/monailabel/setup_venv.sh"
echo "monailabel lane: environment ready after $((SECONDS - start)) s"

work="$(mktemp -d "${TMPDIR:-/tmp}/monailabel-lane.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/home"
# HOME: MONAI Label keeps sessions and caches under ~/.cache; the lane's go to its temporary folder.
# cwd is the temporary folder and pythonpath is cleared, so the repository root is not on sys.path: the bundle's
# code must be found through the copy placed in the app, as MONAI Label finds it.
cmd=(env HOME="$work/home" MONAILABEL_LANE=1 PYTHONDONTWRITEBYTECODE=1 "$root/.venv-monailabel/bin/python" -m pytest
    -c "$root/pyproject.toml" --rootdir "$root" -o pythonpath= -p no:cacheprovider --basetemp "$work/pytest"
    "$root/tests/monailabel" "$@")
cd "$work"
if unshare --net sh -c 'ip link set lo up' >/dev/null 2>&1; then
    echo "monailabel lane: running offline (network namespace with loopback only)"
    unshare --net sh -c 'ip link set lo up && exec "$@"' sh env MONAILABEL_LANE_NETNS=1 "${cmd[@]}"
else
    echo "monailabel lane: NOTICE: cannot create a network namespace here; running with the proxy set to a closed port"
    env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost "${cmd[@]}"
fi
echo "monailabel lane: done in $((SECONDS - start)) s"
