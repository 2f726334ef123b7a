# SPDX-License-Identifier: Apache-2.0
"""A real ``monailabel start_server`` with the ``monaibundle`` app, offline, on 127.0.0.1: one ``/infer`` request.

The server is started the way docs/monailabel.md says (``--conf models <name> --conf zoo_source github``: the local
bundle, no model-zoo listing), on a free port of the loopback interface; the lane script runs it in a network
namespace without any other interface. Every wait is bounded and the server is stopped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

# a submodule: the bare name would find this tests/monailabel folder as a namespace package
pytest.importorskip("monailabel.tasks.infer.bundle", reason="MONAI Label lane only: run scripts/run_monailabel_lane.sh")

import requests  # noqa: E402  (installed with monailabel in the lane's venv)
from monailabel_lane import BUNDLE_NAME  # noqa: E402
from requests_toolbelt.multipart.decoder import MultipartDecoder  # noqa: E402

START_TIMEOUT_S = 240
REQUEST_TIMEOUT_S = 300
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly on SIGINT
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(app_dir: Path, studies: Path, app_conf: dict, tmp_path_factory: pytest.TempPathFactory):
    """``python -m monailabel.main start_server ...`` (what the ``monailabel`` launcher runs); yields its base URL."""
    port = _free_port()
    conf = [arg for key, value in app_conf.items() for arg in ("--conf", key, value)]
    command = [
        sys.executable,
        "-m",
        "monailabel.main",
        "start_server",
        "--app",
        str(app_dir),
        "--studies",
        str(studies),
    ]
    command += conf + ["--host", HOST, "--port", str(port)]
    workdir = tmp_path_factory.mktemp("server")
    log_path = workdir / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {START_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        yield url
    finally:
        _stop(process)


def test_server_lists_the_bundle(server: str, metadata: dict):
    info = requests.get(f"{server}/info/", timeout=30).json()
    channel_def = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    labels = {v.lower(): int(k) for k, v in channel_def.items() if v.lower() != "background"}
    assert info["models"][BUNDLE_NAME]["labels"] == labels
    assert BUNDLE_NAME in info["trainers"]


def test_server_infer_returns_label_in_input_geometry(server: str, studies: Path, metadata: dict, tmp_path: Path):
    image = nib.load(studies / "head_000.nii.gz")
    response = requests.post(
        f"{server}/infer/{BUNDLE_NAME}",
        params={"image": "head_000"},
        files={"params": (None, json.dumps({"device": "cpu"}), "application/json")},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert response.status_code == 200, response.text[:2000]
    parts = {}
    for part in MultipartDecoder.from_response(response).parts:
        disposition = part.headers[b"Content-Disposition"].decode()
        name = disposition.split('name="', 1)[1].split('"', 1)[0]
        parts[name] = part
    params = json.loads(parts["params"].text)
    channel_def = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert params["label_names"] == {v.lower(): int(k) for k, v in channel_def.items() if v.lower() != "background"}
    label_file = tmp_path / "label.nii.gz"
    label_file.write_bytes(parts["image"].content)
    label = nib.load(label_file)
    assert label.shape == image.shape
    np.testing.assert_allclose(label.affine, image.affine, rtol=0, atol=1e-4)
    values = set(np.unique(np.asarray(label.dataobj)).tolist())
    assert values <= {0, 1} and 1 in values, values


def test_lane_is_offline():
    """In the lane's network namespace nothing but loopback is reachable (checked, not assumed)."""
    if os.environ.get("MONAILABEL_LANE_NETNS") != "1":
        pytest.skip("not running in the lane's loopback-only network namespace")
    with pytest.raises(OSError):
        socket.create_connection(("1.1.1.1", 443), timeout=5)
