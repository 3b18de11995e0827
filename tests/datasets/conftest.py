"""Fixtures of tests/datasets: ``mini_root``, see _refmini.py."""
import pytest
from _refmini import build_mini


@pytest.fixture
def mini_root(tmp_path):
    build_mini(tmp_path)
    return tmp_path
