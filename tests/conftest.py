"""Shared fixtures: every test gets its own cache folder, and threads are pinned."""

import pytest
import torch


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(autouse=True, scope="session")
def pinned_threads():
    torch.set_num_threads(1)  # small tensors: threads cost more than they give (bench/env.py)
