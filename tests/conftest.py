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


# ----------------------------------------------------------------------------
# neural parts: tiny randomly initialised checkpoints and small trace files (session-wide)


@pytest.fixture(scope="session")
def torch_single_thread():
    """Tiny models run fastest on one thread (and two test processes then do not thrash two cores)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, torch_single_thread):
    """A randomly initialised one-step checkpoint: nsr.model.make_config(Vocab(), 'tiny') + save_checkpoint."""
    from neural_helpers import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", autoregressive=False, seed=0)


@pytest.fixture(scope="session")
def tiny_ar_checkpoint(tmp_path_factory, torch_single_thread):
    """A randomly initialised autoregressive-mode checkpoint."""
    from neural_helpers import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck_ar") / "tiny_ar", autoregressive=True, seed=1)


@pytest.fixture(scope="session")
def hard_expressions_file(tmp_path_factory):
    """Six arith problems of 1 to 3 variables that the initial population does not solve."""
    from neural_helpers import write_hard_expressions

    return write_hard_expressions(tmp_path_factory.mktemp("hard") / "hard_c05.pkl.gz", 6, seed=0)


@pytest.fixture(scope="session")
def expert_trace(tmp_path_factory, hard_expressions_file):
    """A BasicSR traces file (6 problems, population 10, 6 generations, no early stop)."""
    from nsr.config import EvolutionConfig, RunConfig
    from nsr.datasets import load_expressions
    from nsr.drivers import file_jobs, write_traces
    from nsr.search import Searcher

    recs = load_expressions(hard_expressions_file)["records"]
    out = str(tmp_path_factory.mktemp("expert_trace") / "gen6_hard.pkl.gz")
    evo = EvolutionConfig(population_size=10, num_generations=6, early_stop=False, collect_trajectory=True)
    write_traces(Searcher(evo), file_jobs(recs, 3), out, {"command": "tests/conftest.py expert_trace"},
                 RunConfig(seed=3, num_workers=1, quiet=True))
    return out


@pytest.fixture(scope="session")
def neural_trace(tmp_path_factory, hard_expressions_file, tiny_checkpoint):
    """A neural SR traces file from the tiny checkpoint (3 problems, population 8, 5 generations, batch 2)."""
    from nsr.config import EvolutionConfig, RunConfig, SamplingConfig
    from nsr.datasets import load_expressions
    from nsr.drivers import file_jobs, write_traces
    from nsr.search import Searcher

    recs = load_expressions(hard_expressions_file)["records"][:3]
    out = str(tmp_path_factory.mktemp("neural_trace") / "gen5_hard_neural.pkl.gz")
    evo = EvolutionConfig(population_size=8, num_generations=5, early_stop=False, collect_trajectory=True)
    searcher = Searcher(evo, SamplingConfig(checkpoint=tiny_checkpoint))
    write_traces(searcher, file_jobs(recs, 4), out, {"command": "tests/conftest.py neural_trace"},
                 RunConfig(seed=4, batch_size=2, quiet=True))
    return out
