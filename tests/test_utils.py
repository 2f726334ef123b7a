# SPDX-License-Identifier: Apache-2.0
"""bundle.utils: atomic outputs (files and folders) leave the previous result intact on failure; file checksums."""

from __future__ import annotations

import hashlib

import pytest

from bundle.utils import atomic_output, atomic_write_text, sha256_file


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("name, suffix", [("out.nii.gz", ".nii.gz"), ("qc.png", ".png"), ("README", "")])
def test_atomic_output_writes_through_a_hidden_name_with_the_suffix(tmp_path, name, suffix):
    target = tmp_path / "sub" / name
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(f".{name}.") and tmp.name.endswith(f".tmp{suffix}")
        assert not tmp.exists() and not target.exists()
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert _names(target.parent) == [name]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_output_leaves_target_untouched_on_failure(tmp_path, error):
    target = tmp_path / "out.nii.gz"
    target.write_text("previous")
    with pytest.raises(error):
        with atomic_output(target) as tmp:
            tmp.write_text("partial")
            raise error("boom")
    assert target.read_text() == "previous"
    assert _names(tmp_path) == ["out.nii.gz"]


@pytest.mark.parametrize("existing", [None, "empty"])
def test_atomic_output_directory_replaces_a_missing_or_empty_folder(tmp_path, existing):
    target = tmp_path / "series"
    if existing:
        target.mkdir()
    with atomic_output(target, directory=True) as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir()) and tmp.parent == tmp_path
        (tmp / "slice_0001.dcm").write_bytes(b"x")
    assert _names(target) == ["slice_0001.dcm"]
    assert _names(tmp_path) == ["series"]


def test_atomic_output_directory_failure_keeps_the_previous_folder(tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target, directory=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("interrupted")
    assert _names(target) == ["old.txt"] and _names(tmp_path) == ["bundle"]
    with pytest.raises(OSError):  # os.replace refuses a non-empty folder; the temporary folder is removed
        with atomic_output(target, directory=True) as tmp:
            (tmp / "new.txt").write_text("new")
    assert _names(target) == ["old.txt"] and _names(tmp_path) == ["bundle"]


@pytest.mark.parametrize("target", [".", ""])
def test_atomic_output_needs_a_name(target):
    with pytest.raises(ValueError, match="target"):
        with atomic_output(target):
            pass


def test_atomic_write_text_replaces_the_file(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text("old")
    assert atomic_write_text(path, '{"mean": 1.5}\n') == path
    assert path.read_text() == '{"mean": 1.5}\n'
    assert _names(tmp_path) == ["stats.json"]


@pytest.mark.parametrize("size", [0, 5, (1 << 20) + 3])  # empty, small, more than one 1 MiB block
def test_sha256_file_matches_hashlib(tmp_path, size):
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
