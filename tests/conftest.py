"""Shared test settings: CPU only, few threads, no network, index root in a temporary folder."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(autouse=True)
def _isolated_index_root(tmp_path_factory, monkeypatch):
    """Every test gets its own SIMX_INDEXES so nothing touches ./indexes."""
    monkeypatch.setenv("SIMX_INDEXES", str(tmp_path_factory.mktemp("indexes")))
    monkeypatch.delenv("SIMX_LABELS_URL", raising=False)
