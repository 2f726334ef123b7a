# SPDX-License-Identifier: Apache-2.0
"""scripts/export_zoo.py / scripts.zoo: the model-zoo bundle is assembled, formatted and passes the zoo's checks,
and each check catches what it is for."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from scripts.zoo import BUNDLE_NAME, PRECOMMIT_MAX_KB, ZooCheckError, assemble_bundle, check_bundle, export_zoo


@pytest.fixture(scope="session")
def schema(metadata_schema: Path) -> Path:
    return metadata_schema


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, schema: Path) -> tuple[Path, dict]:
    """The CLI run end to end from another folder, with relative paths: folder, zip and report, all checks."""
    cwd = tmp_path_factory.mktemp("zoo")
    script = Path(__file__).resolve().parents[1] / "scripts" / "export_zoo.py"
    command = [sys.executable, str(script), "dist", "--schema", str(schema), "--zip", "--report", "dist/report.json"]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return cwd / "dist" / BUNDLE_NAME, json.loads((cwd / "dist" / "report.json").read_text())


@pytest.mark.slow
def test_export_passes_every_zoo_check(exported: tuple[Path, dict]):
    _, report = exported
    expected = {"files", "sizes", "metadata", "imports", "json", "text", "python"}
    expected |= {"large_files", "verify_metadata", "verify_net_in_out", "ckpt_export"}
    assert set(report["checks"]) == expected
    assert all(value.startswith("ok") for value in report["checks"].values()), report["checks"]


@pytest.mark.slow
def test_export_layout(exported: tuple[Path, dict], repo_root: Path):
    bundle, report = exported
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    for rel in ("LICENSE", "configs/metadata.json", "configs/inference.json", "configs/train.json"):
        assert rel in files
    for rel in ("models/model.pt", "docs/README.md", "docs/data_license.txt", "bundle/networks/__init__.py"):
        assert rel in files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc") or f == "scripts/export_zoo.py"]
    # developer tooling and the optional nnU-Net plugin stay out of the zoo bundle
    assert not [f for f in files if f.startswith(("scripts/benchmarks/", "bundle/nnunet/", "bundle/benchmarks/"))]
    assert not {"scripts/zoo.py", "scripts/benchmark.py", "scripts/main_job_report.py", "bundle/zoo.py"} & files
    # the repository's own files are unchanged by the export (formatting happens in the copy)
    assert (bundle / "models" / "model.pt").read_bytes() == (repo_root / "models" / "model.pt").read_bytes()
    with zipfile.ZipFile(bundle.parent / f"{BUNDLE_NAME}.zip") as archive:
        names = {n for n in archive.namelist() if not n.endswith("/")}
    assert names == {f"{BUNDLE_NAME}/{f}" for f in files}


@pytest.mark.slow
def test_large_files_are_listed_with_their_hash(exported: tuple[Path, dict]):
    import yaml

    bundle, report = exported
    large = {
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and p.stat().st_size > PRECOMMIT_MAX_KB * 1024
    }
    entries = yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"] if large else []
    assert {e["path"] for e in entries} == large
    import hashlib

    for entry in entries:
        assert entry["hash_type"] == "sha256"
        assert entry["hash_val"] == hashlib.sha256((bundle / entry["path"]).read_bytes()).hexdigest()
        assert entry["url"].startswith("https://")  # the zoo's download step rejects an empty url
    assert "models/model.pt" not in large  # float16 weights: under the limit, committed with the bundle
    assert report["warnings"] == []


@pytest.mark.slow
def test_export_passes_black_as_the_zoo_runs_it(exported: tuple[Path, dict], tmp_path: Path):
    """The zoo's code-format workflow runs `black --skip-magic-trailing-comma --check` with its pyproject.toml."""
    bundle, _ = exported
    command = [sys.executable, "-m", "black", "--skip-magic-trailing-comma", "--check", "--line-length", "120"]
    command += ["--target-version", "py37", "--target-version", "py38", "--target-version", "py39", str(bundle)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_large_file_without_url_is_refused(repo_root: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    for rel in ("configs", "bundle", "docs", "models"):
        shutil.copytree(repo_root / rel, repo / rel, ignore=shutil.ignore_patterns("__pycache__", "nnunet"))
    shutil.copy(repo_root / "LICENSE", repo / "LICENSE")
    (repo / "models" / "model.pt").write_bytes((repo_root / "models" / "model.pt").read_bytes() * 2)
    with pytest.raises(ZooCheckError, match="models/model.pt exceed the zoo's 1024 KB pre-commit limit"):
        assemble_bundle(repo, tmp_path / "out")
    bundle = assemble_bundle(repo, tmp_path / "out", large_files_url="https://example.org/v1/")
    assert "https://example.org/v1/models/model.pt" in (bundle / "large_files.yml").read_text()


def _break_license(b: Path) -> None:
    (b / "LICENSE").unlink()


def _indent_two(b: Path) -> None:
    path = b / "configs" / "metadata.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=2) + "\n")


def _version_not_in_changelog(b: Path) -> None:
    path = b / "configs" / "metadata.json"
    meta = json.loads(path.read_text())
    meta["version"] = "9.9.9"
    path.write_text(json.dumps(meta, indent=4) + "\n")


def _local_torch_version(b: Path) -> None:
    path = b / "configs" / "metadata.json"
    meta = json.loads(path.read_text())
    meta["pytorch_version"] = "2.13.0+cpu"
    path.write_text(json.dumps(meta, indent=4) + "\n")


def _trailing_space(b: Path) -> None:
    path = b / "bundle" / "utils.py"
    path.write_text(path.read_text().replace("\n\n", "\n  \n", 1))


def _unpinned_import(b: Path) -> None:
    path = b / "bundle" / "device.py"
    path.write_text(path.read_text().replace("import torch\n", "import torch\nimport yaml  # noqa: F401\n", 1))


def _bad_import_order(b: Path) -> None:
    path = b / "bundle" / "device.py"
    path.write_text(path.read_text().replace("import re\n", "import re\nimport abc  # noqa: F401\n", 1))


def _unlisted_large_file(b: Path) -> None:
    (b / "docs" / "big.bin").write_bytes(b"\0" * (2 * PRECOMMIT_MAX_KB * 1024))


def _wrong_hash(b: Path) -> None:
    path = b / "large_files.yml"
    text = path.read_text()
    start = text.index('hash_val: "') + len('hash_val: "')
    path.write_text(text[:start] + "0" * 64 + text[start + 64 :])


def _empty_url(b: Path) -> None:
    path = b / "large_files.yml"
    text = path.read_text()
    start = text.index('url: "') + len('url: "')
    path.write_text(text[:start] + text[text.index('"', start) :])


def _pycache(b: Path) -> None:
    (b / "bundle" / "__pycache__").mkdir(exist_ok=True)
    (b / "bundle" / "__pycache__" / "zoo.cpython-311.pyc").write_bytes(b"\0")


BROKEN = [
    # (mutation, check group, text expected in the error)
    (_break_license, "files", "[files] LICENSE is missing"),
    (_pycache, "files", "zoo.cpython-311.pyc should not be in a zoo bundle"),
    (_indent_two, "json", "[json] configs/metadata.json is not formatted"),
    (_version_not_in_changelog, "metadata", "version '9.9.9' is not a key of its changelog"),
    (_local_torch_version, "metadata", "pytorch_version '2.13.0+cpu' is not a plain release number"),
    (_trailing_space, "text", "[text] bundle/utils.py: trailing whitespace"),
    (_unpinned_import, "imports", "bundle/device.py: imports 'yaml' (package PyYAML)"),
    (_bad_import_order, "python", "[python] isort"),
    (_unlisted_large_file, "sizes", "docs/big.bin is 2048 KB > 1024 KB and not in large_files.yml"),
    (_wrong_hash, "sizes", "does not match the file"),
    (_empty_url, "sizes", "the zoo's download step rejects an empty url"),
]


@pytest.mark.slow
@pytest.mark.parametrize("mutate, group, message", BROKEN, ids=[b[0].__name__.strip("_") for b in BROKEN])
def test_check_catches(exported: tuple[Path, dict], tmp_path: Path, mutate, group: str, message: str):
    bundle = shutil.copytree(exported[0], tmp_path / BUNDLE_NAME)  # passes every group (test above)
    mutate(bundle)
    with pytest.raises(ZooCheckError) as err:
        check_bundle(bundle, checks=[group])
    assert message in str(err.value)
    assert str(bundle) in str(err.value)


def test_assemble_refuses_incomplete_repo_and_existing_output(repo_root: Path, tmp_path: Path):
    partial = tmp_path / "repo"
    shutil.copytree(repo_root / "configs", partial / "configs")
    with pytest.raises(ZooCheckError, match="missing LICENSE, models/model.pt, docs/README.md"):
        assemble_bundle(partial, tmp_path / "out")
    (tmp_path / "out" / BUNDLE_NAME).mkdir(parents=True)
    with pytest.raises(ValueError, match="already exists; pass overwrite=True"):
        assemble_bundle(repo_root, tmp_path / "out")
    with pytest.raises(ValueError, match="name must be letters"):
        assemble_bundle(repo_root, tmp_path / "out", name="my bundle")


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(checks=["speed"]), "checks \\['speed'\\] are unknown"),
        (dict(schema="missing.json"), "schema missing.json does not exist"),
    ],
)
def test_check_bundle_bad_arguments(exported: tuple[Path, dict], kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        check_bundle(exported[0], **kwargs)


def test_export_zoo_needs_an_existing_schema(tmp_path: Path):
    with pytest.raises(ValueError, match="schema nope.json does not exist"):
        export_zoo(str(tmp_path), "nope.json")
    with pytest.raises(ValueError, match="schema None does not exist"):
        export_zoo(str(tmp_path))
