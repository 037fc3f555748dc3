"""Fixtures for trainer tests: a tiny stored feed SampleSet + FeatureSet, copied fresh for each test."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import pipeline_data

from recplane.store import LocalStore

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trainer-data") / "store"
    pipeline_data.build_store(root)
    return root


@pytest.fixture
def store(store_template: Path, tmp_path: Path) -> LocalStore:
    root = tmp_path / "store"
    shutil.copytree(store_template, root)
    return LocalStore(root)
