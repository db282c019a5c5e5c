"""Test configuration: the repository root and tests/ on sys.path, shared fixtures."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (os.path.dirname(HERE), HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from helpers import simple_record, write_expressions  # noqa: E402


@pytest.fixture
def small_expressions_file(tmp_path):
    """A valid expressions file of four simple records, in its own folder."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    recs = [simple_record(i, n=20, nv=1 + i % 2, seed=i) for i in range(4)]
    return write_expressions(folder / "tiny.pkl.gz", recs, {"operator_set": "arith", "constants": [1.0]})
