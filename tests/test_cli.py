# SPDX-License-Identifier: Apache-2.0
"""bundle.cli.setup_logging: what a script shows on stderr, run in a fresh interpreter as a script would be."""

from __future__ import annotations

import subprocess
import sys

import pytest

LOG_SOME = (
    "import logging; from bundle.cli import setup_logging; setup_logging({args}); "
    "log = logging.getLogger('bundle.x'); log.debug('detail'); log.info('wrote a.nii.gz'); log.warning('odd'); "
    "logging.getLogger('highdicom.seg').info('copied module')"
)


@pytest.mark.parametrize(
    "args, expected",
    [
        ("", ["INFO wrote a.nii.gz", "WARNING odd"]),
        ("show_level=False", ["wrote a.nii.gz", "odd"]),
        ("verbose=True", ["DEBUG detail", "INFO wrote a.nii.gz", "WARNING odd", "INFO copied module"]),
    ],
)
def test_setup_logging_levels_format_and_quiet_loggers(repo_root, args, expected):
    proc = subprocess.run(
        [sys.executable, "-c", LOG_SOME.format(args=args)], capture_output=True, text=True, cwd=repo_root, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == expected and proc.stdout == ""


def test_fire_command_hands_the_api_function_to_fire():
    """A command has its function's parameters (with the command's defaults) plus verbose, and calls it."""
    import inspect

    from bundle.cli import fire_command

    calls = []

    def api(input: str, output: str, *, device: str = "auto", log_file: bool = False, n: int = 1) -> str:
        """Do it.

        Args:
            input: in.
            output: out.
            device: where. Defaults to "auto".
            log_file: log. Defaults to False.
            n: how many. Defaults to 1.
        """
        calls.append((input, output, device, log_file, n))
        return "ok"

    command = fire_command(api, defaults={"log_file": True}, setup=lambda verbose: calls.append(verbose))
    params = inspect.signature(command).parameters
    assert list(params) == ["input", "output", "device", "log_file", "n", "verbose"]
    assert params["log_file"].default is True and params["verbose"].default is False
    assert "verbose: log debug messages too" in command.__doc__ and "device: where" in command.__doc__
    assert command(2024, "out", n=3, verbose=True) == "ok"  # fire reads a folder named 2024 as a number
    assert calls == [True, ("2024", "out", "auto", True, 3)]
    assert fire_command(api, run=lambda call: ("ran", call()), setup=lambda v: None)("a", "b") == ("ran", "ok")
    with pytest.raises(ValueError, match="does not have"):
        fire_command(api, defaults={"nope": 1})


@pytest.mark.parametrize(
    "script, api",
    [
        ("segment.py", "bundle.segment:segment"),
        ("pseudo_label.py", "bundle.pseudo_label:pseudo_label_files"),
        ("make_phantoms.py", "bundle.data.phantoms:make_phantom_dataset"),
        ("dataset_stats.py", "bundle.transforms.stats:compute_dataset_stats"),
    ],
)
def test_scripts_are_their_api_functions(repo_root, script, api):
    """The scripts' options are the API's signature (plus verbose): nothing is declared twice."""
    import importlib
    import importlib.util
    import inspect

    spec = importlib.util.spec_from_file_location(f"cli_{script[:-3]}", repo_root / "scripts" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module_name, name = api.split(":")
    function = getattr(importlib.import_module(module_name), name)
    assert module.main.__wrapped__ is function
    expected = list(inspect.signature(function).parameters) + ["verbose"]
    assert list(inspect.signature(module.main).parameters) == expected


@pytest.mark.slow
def test_segment_help_lists_the_api_options(repo_root):
    proc = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "segment.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=repo_root,
        timeout=120,
        env={**__import__("os").environ, "PAGER": "cat"},
    )
    assert proc.returncode == 0, proc.stderr
    for option in (
        "--device",
        "--preset",
        "--weights",
        "--dicom_seg",
        "--qc",
        "--reference",
        "--overwrite",
        "--verbose",
    ):
        assert option in proc.stdout + proc.stderr  # fire writes the help to stderr when it has no pager
    assert "a preset name in ``configs/presets``" in proc.stdout + proc.stderr  # the API's own docstring
