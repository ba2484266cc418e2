"""Shared fixtures: no network, and the tiny study of ``tests.support.study`` (built once, run once)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.support.study import OFFLINE_ENV, build_tiny_study, run_snakemake

os.environ.update(OFFLINE_ENV)
os.environ["LAYERSHIFT_CALIBRATION"] = (
    "none"  # cost predictions as fitted, whatever this machine's calibration
)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to open a non-loopback connection fails the test loudly."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (
            host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")
        ):
            raise RuntimeError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """A fresh tiny study directory (config.yaml, models/, data/), not yet run."""
    workdir = tmp_path_factory.mktemp("tiny_study")
    build_tiny_study(workdir)
    return workdir


@pytest.fixture(scope="session")
def tiny_study_done(tiny_study) -> Path:
    """The tiny study run end to end once (shared by the end-to-end tests)."""
    run_snakemake(tiny_study, "--cores", "2")
    return tiny_study
