# SPDX-License-Identifier: Apache-2.0
"""Assemble the MONAI model-zoo form of this bundle and check it the way the zoo's CI does.

:func:`export_zoo` copies what a zoo bundle holds from the repository (configs, ``models/model.pt``, ``docs/README.md``
and ``docs/data_license.txt`` with the pictures the README links, ``LICENSE``, the ``bundle`` package the configs'
``_target_`` values point at (without the optional ``bundle/nnunet`` plugin), the ``scripts/*.py`` command-line tools
(without the developer tooling: this module, ``scripts/benchmarks`` and the benchmark scripts), writes
``large_files.yml`` for files above the zoo's pre-commit limit, normalises formatting as the zoo's
pre-commit/``runtests.sh --autofix`` would (JSON: 4-space indent, keys unsorted, final newline; Python: isort and black
with the zoo's settings) and then :func:`check_bundle` verifies a fresh copy of the result in a temporary folder:
required and preferred files, sizes and ``large_files.yml`` hashes (``download_large_files``, offline), version and
changelog, ``verify_metadata`` against the given schema, ``verify_net_in_out``, ``ckpt_export`` to TorchScript and
reload (the scripted model must reproduce the eager one), JSON and text formatting, black/isort/flake8 with the zoo's
configuration, and that every package the Python code imports (outside try/if blocks) is installed by the zoo's CPU
premerge from ``metadata.json``'s pins.

Custom code stays in the ``bundle`` package (the configs reference ``bundle.*``); the zoo does not require the name
``scripts``. MONAI Label's ``unload_module("scripts")`` only re-imports a package named ``scripts`` per request, so a
MONAI Label server imports ``bundle`` once: restart it after changing the code (see docs/model_zoo.md).
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bundle.utils import atomic_output, atomic_write_text, sha256_file

__all__ = [
    "BUNDLE_NAME",
    "CHECK_GROUPS",
    "MAX_FILE_MB",
    "PRECOMMIT_MAX_KB",
    "ZooCheckError",
    "assemble_bundle",
    "check_bundle",
    "export_zoo",
    "normalise_formatting",
]

logger = logging.getLogger(__name__)

BUNDLE_NAME = "brain_ct_convlstm_segmentation"
MAX_FILE_MB = 25  # model-zoo CONTRIBUTING.md, "Model storage"
PRECOMMIT_MAX_KB = 1024  # model-zoo .pre-commit-config.yaml, check-added-large-files --maxkb=1024
REQUIRED_FILES = ("configs/metadata.json", "LICENSE")  # model-zoo ci/verify_bundle.py
PREFERRED_FILES = ("models/model.pt", "configs/inference.json")
DOC_FILES = ("docs/README.md", "docs/data_license.txt")  # model-zoo CONTRIBUTING.md
# model-zoo setup.cfg ([flake8], [isort]) and pyproject.toml ([tool.black]), as its runtests.sh --codeformat reads
# them from the repository root
ZOO_SETUP_CFG = """[flake8]
select = B,C,E,F,N,P,T4,W,B9
max_line_length = 120
ignore =
    E203
    E501
    E741
    W503
    W504
    C408
    N812
    B023
per_file_ignores = __init__.py: F401, __main__.py: F401
exclude = *.pyi,.git,.eggs,monai/_version.py,versioneer.py,venv,.venv,_version.py

[isort]
known_first_party = models
profile = black
line_length = 120
skip = .git, .eggs, venv, .venv, versioneer.py, _version.py, conf.py
skip_glob = *.pyi
"""
ZOO_PYPROJECT = """[tool.black]
line-length = 120
target-version = ['py37', 'py38', 'py39']
include = '\\.pyi?$'
exclude = '''
(
  /(
      \\.eggs
    | \\.git
    | \\.hg
    | \\.mypy_cache
    | \\.tox
    | \\.venv
    | \\.pytype
    | _build
    | buck-out
    | build
    | dist
  )/
)
'''
"""
# model-zoo runtests.sh: `--autofix` runs `isort $(pwd)` then `black --skip-magic-trailing-comma $(pwd)`;
# `--codeformat` runs `isort --check $(pwd)`, `black --skip-magic-trailing-comma --check $(pwd)` and
# `flake8 $(pwd) --count --statistics` from the repository root (then pytype and mypy, not run here)
ZOO_FIX_COMMANDS = (("isort",), ("black", "--skip-magic-trailing-comma"))
ZOO_CHECK_COMMANDS = (
    ("isort", "--check"),
    ("black", "--skip-magic-trailing-comma", "--check"),
    ("flake8", "--count", "--statistics"),
)
# Files above the pre-commit limit that are redistributed unmodified: the zoo downloads them from their source (the
# sha256 in large_files.yml is this copy's, so a different upstream file fails the download instead of slipping in).
UPSTREAM_URLS = {
    "bundle/data/resources/ct_brain_atlas_1mm.nii.gz": (
        "https://github.com/wasserth/TotalSegmentator/raw/7b42e17697da24a8c055e3c19906f6277c96f1a7/"
        "totalsegmentator/resources/ct_brain_atlas_1mm.nii.gz"
    )
}
# not shipped: developer tooling (the zoo export itself, benchmarks and their reports) and the optional nnU-Net
# plugin, which imports nnunetv2 (not a dependency of the bundle)
DEVELOPER_SCRIPTS = frozenset({"__init__.py", "benchmark.py", "export_zoo.py", "main_job_report.py", "zoo.py"})
EXCLUDED_PACKAGES = ("bundle/nnunet/",)
TEXT_SUFFIXES = {".py", ".json", ".md", ".txt", ".yml", ".yaml", ".conf", ".sh", ".cfg", ".toml"}
_LINK = re.compile(r"\]\(([^)\s]+)\)|src=\"([^\"]+)\"")
_PLAIN_VERSION = re.compile(r"^\d+(\.\d+)*$")


class ZooCheckError(ValueError):
    """The bundle does not meet a model-zoo requirement; the message names every failing check and file."""


def _pretty_json(text: str) -> str:
    """What pre-commit's ``pretty-format-json --autofix --no-sort-keys --indent=4`` makes of ``text``."""
    return json.dumps(json.loads(text), indent=4, ensure_ascii=True) + "\n"


def _bundle_files(repo_root: Path) -> list[str]:
    """Paths (relative to ``repo_root``) of everything a zoo bundle of this repository holds."""
    missing = [p for p in (*REQUIRED_FILES, *PREFERRED_FILES, *DOC_FILES) if not (repo_root / p).is_file()]
    if missing:
        raise ZooCheckError(f"{repo_root}: missing {', '.join(missing)} (needed in a model-zoo bundle)")
    files = {"LICENSE", "models/model.pt", *DOC_FILES}
    skip_dirs = {"__pycache__"}
    for top in ("configs", "bundle"):
        for path in (repo_root / top).rglob("*"):
            rel = path.relative_to(repo_root)
            if rel.as_posix().startswith(EXCLUDED_PACKAGES) or skip_dirs & set(rel.parts):
                continue
            if path.is_file() and path.suffix not in {".pyc", ".pyo"}:
                files.add(rel.as_posix())
    files.update(
        p.relative_to(repo_root).as_posix()
        for p in (repo_root / "scripts").glob("*.py")
        if p.name not in DEVELOPER_SCRIPTS
    )
    readme = repo_root / "docs" / "README.md"
    for match in _LINK.finditer(readme.read_text(encoding="utf-8")):
        target = (match.group(1) or match.group(2)).split("#", 1)[0]
        if not target or "://" in target or target.startswith("/"):
            continue
        path = (readme.parent / target).resolve()
        if path.is_file() and path.is_relative_to(repo_root.resolve()):
            files.add(path.relative_to(repo_root.resolve()).as_posix())
    return sorted(files)


def _write_large_files(bundle_dir: Path, large_files_url: str | None) -> list[str]:
    """Write ``large_files.yml`` for files above :data:`PRECOMMIT_MAX_KB`; return their relative paths.

    A file redistributed unmodified from elsewhere is downloaded from there (:data:`UPSTREAM_URLS`); any other large
    file from ``<large_files_url>/<relative path>``.

    Raises:
        ZooCheckError: if a large file would have no URL (the zoo's download step rejects an empty one).
    """
    large = sorted(
        p.relative_to(bundle_dir).as_posix()
        for p in bundle_dir.rglob("*")
        if p.is_file() and p.stat().st_size > PRECOMMIT_MAX_KB * 1024
    )
    if not large:
        return []
    urls = {
        rel: UPSTREAM_URLS.get(rel) or (f"{large_files_url.rstrip('/')}/{rel}" if large_files_url else "")
        for rel in large
    }
    missing = [rel for rel, url in urls.items() if not url]
    if missing:
        raise ZooCheckError(
            f"{', '.join(missing)} exceed the zoo's {PRECOMMIT_MAX_KB} KB pre-commit limit and have no download URL "
            "(the zoo's large-file step rejects an empty one): upload them and give large_files_url, or make them "
            "smaller (weights: store them in float16, see docs/model_zoo.md)."
        )
    lines = ["large_files:"]
    for rel in large:
        # JSON strings are YAML double-quoted scalars
        lines += [
            f"  - path: {json.dumps(rel)}",
            f"    url: {json.dumps(urls[rel])}",
            f"    hash_val: {json.dumps(sha256_file(bundle_dir / rel))}",
            '    hash_type: "sha256"',
        ]
    (bundle_dir / "large_files.yml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return large


def assemble_bundle(
    repo_root: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    name: str = BUNDLE_NAME,
    large_files_url: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Copy the zoo bundle's files from ``repo_root`` to ``output_dir/name`` and write ``large_files.yml``.

    The folder is built under a temporary name in ``output_dir`` and moved into place when complete.

    Args:
        repo_root: the repository (bundle root) to export.
        output_dir: folder that receives the bundle folder (created if missing).
        name: bundle folder name. Defaults to :data:`BUNDLE_NAME`.
        large_files_url: base URL the large files without an upstream source (:data:`UPSTREAM_URLS`) will be
            downloadable from (``<url>/<relative path>``). Defaults to None (then no such file may exceed the
            1024 KB limit).
        overwrite: replace an existing ``output_dir/name``. Defaults to False.

    Returns:
        The bundle folder.

    Raises:
        ZooCheckError: if a required, preferred or documentation file is missing from ``repo_root``, or a file above
            the 1024 KB limit would have no download URL.
        ValueError: on a bad ``name`` or an existing output without ``overwrite``.

    Example:
        >>> assemble_bundle(".", "dist")  # doctest: +SKIP
        PosixPath('dist/brain_ct_convlstm_segmentation')
    """
    repo_root, output_dir = Path(repo_root), Path(output_dir)
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"name must be letters, digits and underscores (a zoo bundle folder name), got {name!r}.")
    if not (repo_root / "configs" / "metadata.json").is_file():
        raise ZooCheckError(f"{repo_root} is not a bundle root: configs/metadata.json not found")
    target = output_dir / name
    if target.exists() and not overwrite:
        raise ValueError(f"output {target} already exists; pass overwrite=True to replace it.")
    for source in ("configs", "bundle", "models", "docs", "scripts"):
        if target.resolve().is_relative_to((repo_root / source).resolve()):
            raise ValueError(f"output {target} lies inside the exported folder {repo_root / source}.")
    with atomic_output(target, directory=True) as staging:
        for rel in _bundle_files(repo_root):
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / rel, staging / rel)
        _write_large_files(staging, large_files_url)
        if target.exists():
            shutil.rmtree(target)
    logger.info("assembled %s", target)
    return target


def _python_files(bundle_dir: Path) -> list[Path]:
    return sorted(p for p in bundle_dir.rglob("*.py") if "__pycache__" not in p.parts)


def _zoo_checkout(work: Path, bundle_dir: Path) -> Path:
    """A stand-in for a model-zoo checkout in ``work``: its ``setup.cfg`` and ``pyproject.toml`` at the root and the
    Python files of ``bundle_dir`` copied to ``models/<name>/``, so the formatters run exactly as the zoo's
    ``runtests.sh`` runs them (a copy, not a link: black skips links that point outside the project)."""
    root = work / "model-zoo"
    copy = root / "models" / bundle_dir.name
    if root.exists():
        shutil.rmtree(root)
    copy.mkdir(parents=True)
    (root / "setup.cfg").write_text(ZOO_SETUP_CFG, encoding="utf-8")
    (root / "pyproject.toml").write_text(ZOO_PYPROJECT, encoding="utf-8")
    for path in _python_files(bundle_dir):
        target = copy / path.relative_to(bundle_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return root


def _run_zoo_tool(command: tuple[str, ...], root: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m <command> $(pwd)`` in the zoo checkout ``root``, as runtests.sh does."""
    args = [sys.executable, "-m", command[0], *command[1:], str(root)]
    if command[0] == "flake8":  # runtests.sh puts the path first: flake8 "$(pwd)" --count --statistics
        args = [sys.executable, "-m", "flake8", str(root), *command[1:]]
    return _run(args, cwd=root, timeout=timeout)


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def normalise_formatting(bundle_dir: str | os.PathLike) -> list[str]:
    """Apply the zoo's automatic formatting to a bundle folder, as its pre-commit and ``--autofix`` would.

    JSON files are rewritten as ``pretty-format-json --autofix --no-sort-keys --indent=4``; Python files go through
    ``runtests.sh --autofix``'s commands in a stand-in zoo checkout (:data:`ZOO_FIX_COMMANDS`): isort (the zoo's
    ``setup.cfg``: profile black, line length 120, ``known_first_party = models``, so ``bundle`` imports sort as
    third-party there), then black with ``--skip-magic-trailing-comma`` (the zoo's ``pyproject.toml``: line length
    120, targets py37-py39).

    Args:
        bundle_dir: the bundle folder (changed in place).

    Returns:
        Relative paths of the files whose content changed.

    Raises:
        ZooCheckError: if a JSON file does not parse or isort/black fail to run.

    Example:
        >>> normalise_formatting("dist/brain_ct_convlstm_segmentation")  # doctest: +SKIP
        []
    """
    bundle_dir = Path(bundle_dir).resolve()  # the tools run in another folder
    before = {p: p.read_bytes() for p in bundle_dir.rglob("*") if p.is_file() and p.suffix in {".json", ".py"}}
    for path in before:
        if path.suffix == ".json":
            text = path.read_text(encoding="utf-8")
            try:
                pretty = _pretty_json(text)
            except json.JSONDecodeError as err:
                raise ZooCheckError(f"{path}: not valid JSON ({err})") from err
            if pretty != text:
                path.write_text(pretty, encoding="utf-8")
    if _python_files(bundle_dir):
        with tempfile.TemporaryDirectory() as work:
            root = _zoo_checkout(Path(work), bundle_dir)
            for command in ZOO_FIX_COMMANDS:
                result = _run_zoo_tool(command, root)
                if result.returncode != 0:
                    raise ZooCheckError(f"{command[0]} failed on {bundle_dir}:\n{result.stdout}{result.stderr}")
            for path in _python_files(bundle_dir):
                fixed = (root / "models" / bundle_dir.name / path.relative_to(bundle_dir)).read_bytes()
                if fixed != path.read_bytes():
                    path.write_bytes(fixed)
    return sorted(p.relative_to(bundle_dir).as_posix() for p, data in before.items() if p.read_bytes() != data)


def _normalise_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_closure(roots: Iterable[str]) -> set[str]:
    """Distributions pip installs for ``roots`` (installed metadata; markers evaluated, extras not followed)."""
    from importlib import metadata

    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging comes with pip/setuptools environments
        Requirement = None  # noqa: N806
    seen: set[str] = set()
    todo = [_normalise_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in requires:
            if Requirement is not None:
                req = Requirement(spec)
                if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                    continue
                todo.append(_normalise_name(req.name))
            elif "extra ==" not in spec:
                todo.append(_normalise_name(re.split(r"[\s;<>=!~\[(]", spec, maxsplit=1)[0]))
    return seen


def _required_imports(path: Path) -> set[str]:
    """Top-level module names the file imports unconditionally: at module level or inside functions and classes
    (lazy imports, such as highdicom for DICOM SEG, still fail when the package is missing), but not inside
    ``try`` or ``if`` blocks (optional imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.With, ast.For)):
                visit(node.body)

    visit(tree.body)
    return names


def _check_imports_pinned(bundle_dir: Path, metadata_json: dict) -> list[str]:
    """Packages imported by the bundle's Python code that the zoo's premerge would not install from metadata."""
    from importlib import metadata

    pins = {"monai", "torch", "numpy"}
    for key in ("required_packages_version", "optional_packages_version"):
        pins.update(metadata_json.get(key, {}) or {})
    problems = []
    for pin in sorted(pins):
        try:
            metadata.distribution(pin)
        except metadata.PackageNotFoundError:
            problems.append(f"metadata.json pins {pin!r}, which is not installed here: its dependencies are unknown")
    closure = _requirement_closure(pins)
    local = {p.name for p in bundle_dir.iterdir() if p.is_dir()} | {p.stem for p in bundle_dir.glob("*.py")}
    distributions = metadata.packages_distributions()
    for path in _python_files(bundle_dir):
        for module in sorted(_required_imports(path)):
            if module in sys.stdlib_module_names or module in local or module == "__future__":
                continue
            dists = distributions.get(module)
            if not dists:
                problems.append(
                    f"{path.relative_to(bundle_dir)}: imports {module!r}, which no installed package provides"
                )
            elif not any(_normalise_name(d) in closure for d in dists):
                problems.append(
                    f"{path.relative_to(bundle_dir)}: imports {module!r} (package {dists[0]}), which metadata.json's "
                    "required_packages_version does not install"
                )
    return problems


_MONAI_CHECKS = r"""
import json, sys
from pathlib import Path

import torch
from monai.bundle import ckpt_export, download_large_files, verify_metadata, verify_net_in_out
from monai.bundle import ConfigParser

root = Path.cwd()
sys.path.insert(0, str(root))  # as model-zoo ci/verify_bundle.py: the bundle root is importable
device = sys.argv[1]
done = {}
if any(root.glob("large_files.*")):
    download_large_files(bundle_path=str(root))  # present files with a matching hash are not downloaded
    done["large_files"] = "ok"
meta, infer = "configs/metadata.json", "configs/inference.json"
verify_metadata(meta_file=meta, filepath="eval/schema.json")
done["verify_metadata"] = "ok"
verify_net_in_out(net_id="network_def", meta_file=meta, config_file=infer, bundle_root=str(root), device=device)
done["verify_net_in_out"] = "ok"
ckpt_export(net_id="network_def", filepath="models/verify_model.ts", ckpt_file="models/model.pt", meta_file=meta,
            config_file=infer, bundle_root=str(root))
scripted = torch.jit.load("models/verify_model.ts", map_location="cpu").eval()
parser = ConfigParser()
parser.read_config(infer)
parser["bundle_root"] = str(root)
eager = parser.get_parsed_content("network_def")
eager.load_state_dict(torch.load("models/model.pt", map_location="cpu", weights_only=True))
eager.eval()
x = torch.randn(1, 1, 40, 36, 5, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    torch.testing.assert_close(scripted(x), eager(x), rtol=1e-4, atol=1e-5)
done["ckpt_export"] = "ok: TorchScript reloads and reproduces the eager network"
Path("models/verify_model.ts").unlink()
print("ZOO_CHECKS " + json.dumps(done))
"""


def _check_files(fresh: Path, rels: set[str]) -> list[str]:
    problems = [f"{p} is missing" for p in (*REQUIRED_FILES, *PREFERRED_FILES, *DOC_FILES) if p not in rels]
    generated = ("eval/", "runs/", "cache/")
    return problems + [
        f"{r} should not be in a zoo bundle (generated file)"
        for r in sorted(rels)
        if "__pycache__" in r or r.endswith(".pyc") or r.startswith(generated)
    ]


def _check_sizes(fresh: Path, files: list[Path], warnings: list[str]) -> list[str]:
    listed: dict[str, dict] = {}
    if (fresh / "large_files.yml").is_file():
        listed = {e["path"]: e for e in _read_large_files(fresh / "large_files.yml")}
    problems = []
    for path in files:
        rel, size = path.relative_to(fresh).as_posix(), path.stat().st_size
        if size > MAX_FILE_MB * 1024 * 1024 and rel not in listed:
            problems.append(f"{rel} is {size / 2**20:.1f} MB > {MAX_FILE_MB} MB and not in large_files.yml")
        elif size > PRECOMMIT_MAX_KB * 1024 and rel not in listed:
            problems.append(f"{rel} is {size // 1024} KB > {PRECOMMIT_MAX_KB} KB and not in large_files.yml")
    for rel, entry in listed.items():
        if not (fresh / rel).is_file():
            problems.append(f"large_files.yml lists {rel}, which is not in the bundle")
        elif entry.get("hash_type") and entry.get("hash_val") != _hash(fresh / rel, str(entry["hash_type"])):
            problems.append(f"large_files.yml: the {entry['hash_type']} of {rel} does not match the file")
        if not entry.get("url"):
            problems.append(f"large_files.yml: no url for {rel} (the zoo's download step rejects an empty url)")
    return problems


def _check_metadata(fresh: Path) -> list[str]:
    meta = json.loads((fresh / "configs" / "metadata.json").read_text(encoding="utf-8"))
    problems = []
    if meta.get("version") not in (meta.get("changelog") or {}):
        problems.append(f"configs/metadata.json: version {meta.get('version')!r} is not a key of its changelog")
    if "required_packages_version" in meta and "optional_packages_version" in meta:
        problems.append("configs/metadata.json: has both required_ and optional_packages_version")
    pins = {f"{k}_version": meta.get(f"{k}_version") for k in ("monai", "pytorch", "numpy")}
    pins.update(meta.get("required_packages_version") or {})
    return problems + [
        f"configs/metadata.json: {k} {v!r} is not a plain release number pip can pin"
        for k, v in pins.items()
        if not isinstance(v, str) or not _PLAIN_VERSION.match(v)
    ]


def _check_json(fresh: Path, files: list[Path]) -> list[str]:
    problems = []
    for path in sorted(p for p in files if p.suffix == ".json"):
        text = path.read_text(encoding="utf-8")
        try:
            if _pretty_json(text) != text:
                problems.append(f"{path.relative_to(fresh)} is not formatted as pretty-format-json --indent=4")
        except json.JSONDecodeError as err:
            problems.append(f"{path.relative_to(fresh)}: not valid JSON ({err})")
    return problems


def _check_text(fresh: Path, files: list[Path]) -> list[str]:
    """pre-commit's end-of-file-fixer, trailing-whitespace and check-executables-have-shebangs."""
    problems = []
    for path in sorted(p for p in files if p.suffix in TEXT_SUFFIXES or p.name == "LICENSE"):
        data, rel = path.read_bytes(), path.relative_to(fresh)
        if data and not data.endswith(b"\n"):
            problems.append(f"{rel}: no newline at end of file")
        if any(line.rstrip(b"\r") != line.rstrip() for line in data.split(b"\n")):
            problems.append(f"{rel}: trailing whitespace")
        if os.access(path, os.X_OK) and not data.startswith(b"#!"):
            problems.append(f"{rel}: executable without a shebang")
    return problems


def _check_python(fresh: Path, work: Path, timeout: int) -> list[str]:
    if not _python_files(fresh):
        return []
    root = _zoo_checkout(work, fresh)
    problems = []
    for command in ZOO_CHECK_COMMANDS:
        result = _run_zoo_tool(command, root, timeout=timeout)
        if result.returncode != 0:
            out = result.stdout + result.stderr
            for prefix in (str(root / "models" / fresh.name) + "/", f"models/{fresh.name}/", str(fresh) + "/"):
                out = out.replace(prefix, "")
            problems.append(f"{command[0]}: {out.strip() or f'exit status {result.returncode}'}")
    return problems


CHECK_GROUPS = ("files", "sizes", "metadata", "imports", "json", "text", "python", "monai")


def check_bundle(
    bundle_dir: str | os.PathLike,
    schema: str | os.PathLike | None = None,
    *,
    checks: tuple[str, ...] | list[str] | None = None,
    device: str = "cpu",
    timeout: int = 900,
) -> dict[str, Any]:
    """Run the model-zoo checks on a fresh copy of ``bundle_dir`` in a temporary folder.

    The groups (all by default): ``files`` (required, preferred and documentation files; no generated files),
    ``sizes`` (25 MB and 1024 KB limits, ``large_files.yml`` entries and hashes), ``metadata`` (version in the
    changelog, plain pip-pinnable versions), ``imports`` (every package imported outside try/if blocks is installed from
    metadata's pins, as the zoo's CPU premerge installs only those), ``json`` (pretty-format-json), ``text``
    (final newline, trailing whitespace, shebangs), ``python`` (black, isort, flake8 with the zoo's settings) and
    ``monai`` (``download_large_files`` offline, ``verify_metadata``, ``verify_net_in_out``, ``ckpt_export`` to
    TorchScript, reload, and agreement of the scripted and eager networks), run from the copy's root with the
    copy as the only source of the bundle's code.

    Args:
        bundle_dir: the bundle folder (not modified).
        schema: the metadata schema file (e.g. ``meta_schema_20240725.json``), copied to ``eval/schema.json`` in the
            copy as the zoo's CI does after downloading it; required by the ``monai`` group. Defaults to None.
        checks: the groups to run (see above). Defaults to None: all.
        device: device of ``verify_net_in_out`` (the zoo's GPU premerge uses ``cuda:0``). Defaults to ``"cpu"``.
        timeout: seconds allowed for each tool run. Defaults to 900.

    Returns:
        A report ``{"bundle": ..., "checks": {name: "ok" or detail}, "warnings": [...]}``.

    Raises:
        ZooCheckError: listing every failing check as ``[group] file: problem``.
        ValueError: if ``bundle_dir`` or ``schema`` does not exist or a group name is unknown.

    Example:
        >>> check_bundle("dist/brain_ct_convlstm_segmentation", "meta_schema_20240725.json")  # doctest: +SKIP
        {'bundle': ..., 'checks': {'files': 'ok', ...}, 'warnings': [...]}
    """
    bundle_dir = Path(bundle_dir).resolve()
    groups = CHECK_GROUPS if checks is None else tuple(checks)
    unknown = sorted(set(groups) - set(CHECK_GROUPS))
    if unknown:
        raise ValueError(f"checks {unknown} are unknown; choose from {list(CHECK_GROUPS)}.")
    if not bundle_dir.is_dir():
        raise ValueError(f"bundle_dir {bundle_dir} is not a folder.")
    if "monai" in groups and (schema is None or not Path(schema).is_file()):
        raise ValueError(f"schema {schema} does not exist (needed by the `monai` checks).")
    results: dict[str, str] = {}
    failures: list[str] = []
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="zoo-check-") as tmp:
        fresh = Path(tmp) / bundle_dir.name
        shutil.copytree(bundle_dir, fresh)
        files = sorted(p for p in fresh.rglob("*") if p.is_file())
        rels = {p.relative_to(fresh).as_posix() for p in files}
        static = {
            "files": lambda: _check_files(fresh, rels),
            "sizes": lambda: _check_sizes(fresh, files, warnings),
            "metadata": lambda: _check_metadata(fresh),
            "imports": lambda: _check_imports_pinned(
                fresh, json.loads((fresh / "configs" / "metadata.json").read_text(encoding="utf-8"))
            ),
            "json": lambda: _check_json(fresh, files),
            "text": lambda: _check_text(fresh, files),
            "python": lambda: _check_python(fresh, Path(tmp), timeout),
        }
        for group in (g for g in CHECK_GROUPS if g in groups and g != "monai"):
            problems = static[group]()
            results[group] = "FAILED" if problems else "ok"
            failures.extend(f"[{group}] {p}" for p in problems)
        if "monai" in groups:
            (fresh / "eval").mkdir(exist_ok=True)
            shutil.copy2(schema, fresh / "eval" / "schema.json")
            result = _run([sys.executable, "-c", _MONAI_CHECKS, device], cwd=fresh, timeout=timeout)
            marker = [line for line in result.stdout.splitlines() if line.startswith("ZOO_CHECKS ")]
            if result.returncode == 0 and marker:
                results.update(json.loads(marker[-1][len("ZOO_CHECKS ") :]))
            else:
                results["monai"] = "FAILED"
                failures.append(f"[monai] {(result.stdout + result.stderr)[-4000:]}")
    if failures:
        raise ZooCheckError(f"model-zoo checks failed for {bundle_dir}:\n" + "\n".join(failures))
    return {"bundle": str(bundle_dir), "checks": results, "warnings": warnings}


def _hash(path: Path, hash_type: str) -> str:
    if hash_type.lower() not in {"md5", "sha1", "sha256", "sha512"}:
        raise ZooCheckError(f"large_files.yml: unsupported hash_type {hash_type!r} for {path.name}")
    if hash_type.lower() == "sha256":
        return sha256_file(path)
    return hashlib.new(hash_type.lower(), path.read_bytes()).hexdigest()


def _read_large_files(path: Path) -> list[dict]:
    """Entries of a ``large_files.yml``, checked for the zoo's ``large_files: [{path, url, hash_val, hash_type}]``."""
    try:
        import yaml
    except ImportError as err:
        raise ZooCheckError(f"{path}: reading it needs PyYAML (pip install pyyaml), as the zoo's CI has") from err
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = data.get("large_files") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "path" in e for e in entries):
        raise ZooCheckError(f"{path}: expected `large_files:` with a list of {{path, url, hash_val, hash_type}}")
    return entries


def export_zoo(
    output_dir: str,
    schema: str | None = None,
    repo_root: str | None = None,
    name: str = BUNDLE_NAME,
    zip: bool = False,
    verify: bool = True,
    large_files_url: str | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    report: str | None = None,
) -> str:
    """Assemble the model-zoo bundle folder (and optionally a zip), normalise its formatting and verify it.

    Args:
        output_dir: folder receiving ``<name>/`` (and ``<name>.zip``).
        schema: metadata schema file for ``verify_metadata`` (the zoo's CI downloads ``metadata["schema"]``);
            required when ``verify``. Defaults to None.
        repo_root: the repository to export. Defaults to None: the folder holding this ``bundle`` package.
        name: bundle folder name. Defaults to :data:`BUNDLE_NAME`.
        zip: also write ``<output_dir>/<name>.zip`` with the folder at its top level. Defaults to False.
        verify: run :func:`check_bundle` on the result. Defaults to True.
        large_files_url: base URL for ``large_files.yml`` entries without an upstream source. Defaults to None.
        overwrite: replace an existing output folder and zip. Defaults to False.
        device: device for ``verify_net_in_out``. Defaults to ``"cpu"``.
        report: optional JSON file for the report (written atomically). Defaults to None.

    Returns:
        The bundle folder path.

    Raises:
        ZooCheckError: if the bundle fails a zoo check (the message lists all failures).
        ValueError: on bad arguments or an existing output without ``overwrite``.

    Example:
        >>> export_zoo("dist", "tests/data/meta_schema_20240725.json", zip=True)  # doctest: +SKIP
        'dist/brain_ct_convlstm_segmentation'
    """
    root = Path(repo_root) if repo_root is not None else Path(__file__).resolve().parents[1]
    if verify and (schema is None or not Path(schema).is_file()):
        raise ValueError(f"schema {schema} does not exist (needed to verify; or pass verify=False).")
    zip_path = Path(output_dir) / f"{name}.zip"
    if zip and zip_path.exists() and not overwrite:
        raise ValueError(f"output {zip_path} already exists; pass overwrite=True to replace it.")
    bundle_dir = assemble_bundle(root, output_dir, name=name, large_files_url=large_files_url, overwrite=overwrite)
    changed = normalise_formatting(bundle_dir)
    if changed:
        logger.info("formatted as the zoo's pre-commit would: %s", ", ".join(changed))
    result: dict[str, Any] = {"bundle": str(bundle_dir), "formatted": changed}
    if verify:
        result.update(check_bundle(bundle_dir, schema, device=device))
        for warning in result["warnings"]:
            logger.warning(warning)
        logger.info("model-zoo checks passed: %s", ", ".join(result["checks"]))
    if zip:
        with atomic_output(zip_path) as tmp:
            shutil.make_archive(str(tmp.with_suffix("")), "zip", root_dir=output_dir, base_dir=name)
        result["zip"] = str(zip_path)
        logger.info("wrote %s", zip_path)
    if report is not None:
        report_path = atomic_write_text(report, json.dumps(result, indent=4) + "\n")
        logger.info("wrote %s", report_path)
    return str(bundle_dir)
