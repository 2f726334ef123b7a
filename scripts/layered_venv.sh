#!/usr/bin/env bash
# Sourced by the lanes' set-up scripts (scripts/setup_nnunet_env.sh, tests/monailabel/setup_venv.sh): one way to
# build a virtual environment layered on the project's .venv. A .pth file puts .venv's site-packages after the new
# venv's own, and the lane's pins are installed with --no-deps, so torch, monai and every other pin of
# requirements.txt come from .venv unchanged and pip never resolves torch. Nothing is cached (pip's cache is off).
#
#   layered_venv LABEL VENV REQUIREMENTS EXECUTABLE [FILE ...]
#
# LABEL prefixes the messages; EXECUTABLE (in VENV/bin) must exist for a built venv to count; FILE ... are hashed
# with requirements.txt, requirements-dev.txt and REQUIREMENTS into the stamp. Sets `layered_venv_fresh` (1 when
# VENV is up to date and nothing was done), `site` (VENV's site-packages), `stamp` and `want`: the caller finishes
# its venv (patches, sanity checks), then writes "$want" to "$stamp".
layered_venv() {
    local label="$1" venv="$2" requirements="$3" executable="$4"
    shift 4
    local root base base_site
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    base="$root/.venv"
    if [ ! -x "$base/bin/python" ]; then
        echo "$label: $base is missing; run scripts/setup_env.sh first" >&2
        return 1
    fi
    stamp="$venv/.requirements.sha256"
    want="$(cat "$root/requirements.txt" "$root/requirements-dev.txt" "$requirements" "$@" "${BASH_SOURCE[0]}" \
        | sha256sum | cut -d' ' -f1)"
    layered_venv_fresh=0
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/$executable" ]; then
        layered_venv_fresh=1
        site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        return 0
    fi
    echo "$label: building $venv on top of $base"
    rm -rf "$venv"
    "$base/bin/python" -m venv --without-pip "$venv"
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    base_site="$("$base/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$base_site" >"$site/_project_venv.pth"
    # the base venv's pip installs into the new venv (--python); --no-deps: only the pinned list, nothing resolved
    PIP_NO_CACHE_DIR=1 "$base/bin/python" -m pip --python "$venv/bin/python" --disable-pip-version-check install \
        --quiet --no-deps -r "$requirements"
}
