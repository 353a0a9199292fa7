"""Fixtures: the tiny checkpoint and files (built once per session), an in-process Predictor, and the real
app served by `xmodal demo` in a subprocess on a free loopback port."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .tiny_demo import build_checkpoint, build_data, build_uploads, build_video_checkpoint

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts" / "demo"
SERVE = Path(__file__).with_name("serve_offline.py")
OFFLINE_VARIABLES = ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "TRANSFORMERS_OFFLINE")


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    captions = build_data(root / "data")
    return {"root": root, "captions": captions, "model": build_checkpoint(root / "model", root / "data", captions),
            "video_model": build_video_checkpoint(root / "video_model", captions),
            "data": root / "data", **build_uploads(root / "uploads")}


@pytest.fixture(scope="session")
def predictor(assets):
    from xmodal.trainers.demo.predictor import Predictor

    return Predictor(assets["model"])


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def server(assets):
    """`xmodal demo` on the tiny checkpoint. The offline variables are removed from its environment
    (the demo must set them itself), and its non-loopback connection attempts are logged."""
    port, log = free_port(), assets["root"] / "outbound.log"
    environment = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARIABLES}
    environment.update(GRADIO_TEMP_DIR=str(assets["root"] / "gradio"), TOKENIZERS_PARALLELISM="false")
    output = open(assets["root"] / "server.log", "w")
    command = [sys.executable, str(SERVE), str(log), "demo", "--model", str(assets["model"]),
               "--video-model", str(assets["video_model"]), "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"xmodal demo exited ({process.returncode}):\n" + Path(output.name).read_text()[-3000:])
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("xmodal demo did not answer within 180 s:\n" + Path(output.name).read_text()[-3000:])
            time.sleep(0.5)
        yield {"url": url, "process": process, "outbound_log": log, "log": Path(output.name)}
    finally:
        process.send_signal(signal.SIGINT)  # Gradio's way to stop: its temporary files are removed
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        output.close()


@pytest.fixture(scope="session")
def client(server):
    from gradio_client import Client

    return Client(server["url"], verbose=False)
