"""Scikit-learn style front ends over the one evolution loop.

``BasicSR`` (the expert), ``NeuralSR`` (the model, one problem) and
``BatchedNeuralSR`` (the model, many problems per model call) take the fields
of :class:`~nsr.config.EvolutionConfig` (and, for the neural ones,
:class:`~nsr.config.SamplingConfig`) as keyword parameters; ``get_params`` /
``set_params`` come from those fields, so an estimator clones as scikit-learn
expects. A single neural run is a batch of one.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import fields

import numpy as np

from .config import DATA_PRESET, ROLLOUT_DEFAULTS, EvolutionConfig, Rule, SamplingConfig
from .expressions import Expression
from .metrics import r2_score
from .safe_io import InputError
from .search import Searcher, validate_xy
from .tables import from_frame, variable_names
from .traces import seed_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CHECKPOINT = os.path.join(ROOT, "training", "checkpoints", "default")
DEFAULT_AR_CHECKPOINT = os.path.join(ROOT, "training", "checkpoints", "default_ar")
_SEED = Rule("int", 0, 2**63 - 1, optional=True)


class Trajectory:
    """A run's recorded evolution: iterate it generation by generation, or index it like the trace dict
    (``traj['generations']``, ``traj['ancestors_of_best']``, ``traj['best_progression']``, ``traj['stats']``)."""

    def __init__(self, d: dict):
        self._d = d

    def __iter__(self):
        return iter(self._d["generations"])

    def __len__(self):
        return len(self._d["generations"])

    def __getitem__(self, key):
        return self._d["generations"][key] if isinstance(key, (int, slice)) else self._d[key]

    def keys(self):
        return self._d.keys()

    def to_dict(self) -> dict:
        return self._d


class _Estimator:
    """Parameters are the fields of ``_configs`` (defaults overridden by ``_defaults``) plus ``seed``."""

    _configs: tuple = (EvolutionConfig,)
    _defaults: dict = {}
    _extra: dict = {"seed": None}

    @classmethod
    def _param_defaults(cls) -> dict:
        out = {}
        for c in cls._configs:
            out.update((f.name, f.default) for f in fields(c))
        out.update(cls._defaults)
        out.update(cls._extra)
        return out

    def __init__(self, **params):
        defaults = self._param_defaults()
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected parameter(s) {', '.join(unknown)}")
        for k, v in defaults.items():
            setattr(self, k, params.get(k, v))
        self.evolution_config()  # fail at construction, naming the parameter
        _SEED.check("seed", self.seed)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        # a real signature, for help() (``checkpoint`` may come first, positionally)
        P = inspect.Parameter
        params = [P("self", P.POSITIONAL_OR_KEYWORD)]
        defaults = cls._param_defaults()
        if "checkpoint" in defaults:
            params += [P("checkpoint", P.POSITIONAL_OR_KEYWORD, default=defaults.pop("checkpoint")),
                       P("model_path", P.KEYWORD_ONLY, default=None)]
        params += [P(k, P.KEYWORD_ONLY, default=v) for k, v in defaults.items()]
        if "__init__" in cls.__dict__ or cls.__init__ is _Estimator.__init__:
            cls.__init__.__signature__ = inspect.Signature(params)

    def get_params(self, deep=True) -> dict:
        return {k: getattr(self, k) for k in self._param_defaults()}

    def set_params(self, **params):
        current = self.get_params()
        current.update(params)
        type(self).__init__(self, **current)
        return self

    def _config(self, cls):
        values = {f.name: getattr(self, f.name) for f in fields(cls)}
        return cls(**values)

    def evolution_config(self) -> EvolutionConfig:
        return self._config(EvolutionConfig)

    def searcher(self) -> Searcher:
        return Searcher(self.evolution_config())

    def _finish(self, problem, names=None):
        self.problem_ = problem
        tokens, self._final_mse = problem.reported()
        self.variable_names_ = variable_names(names) if names is not None else None
        self.best_model_ = Expression(tokens, self.variable_names_)
        self.n_features_in_ = problem.X.shape[1]
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return self

    def predict(self, X):
        if not hasattr(self, "best_model_"):
            raise _not_fitted(self)
        X, _, names, _ = from_frame(X)
        expected = getattr(self, "feature_names_in_", None)
        if names is not None and expected is not None and list(names) != list(expected):
            missing = [c for c in expected if c not in names]
            if missing:
                raise ValueError(f"X lacks the fitted column(s) {', '.join(map(repr, missing))}")
            X = X[:, [list(names).index(c) for c in expected]]  # the fitted order
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            if self.n_features_in_ != 1:
                raise ValueError(f"Expected 2D array, got 1D array instead: Reshape your data (fitted on "
                                 f"{self.n_features_in_} features)")
            X = X[:, None]
        if not np.all(np.isfinite(X)):
            raise ValueError("Input X contains NaN or infinity")
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[-1] if X.ndim else 0} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input")
        return self.best_model_.evaluate(X)

    def score(self, X, y) -> float:
        """R² of the predictions (scikit-learn's regressor score)."""
        return r2_score(np.asarray(y, dtype=np.float64).ravel(), self.predict(X))

    @property
    def best_progression(self) -> list:
        """The best training MSE of each generation."""
        return list(self.problem_.best_progression)

    @property
    def trajectory(self):
        """The recorded evolution (a :class:`Trajectory`), with ``collect_trajectory=True``; else None."""
        return Trajectory(self.problem_.trajectory()) if self.collect_trajectory else None

    def get_final_mse(self) -> float:
        """The reported model's MSE on the training data."""
        return float(self._final_mse)

    @property
    def equations_(self):
        """The run's front (:mod:`nsr.pareto`), by complexity: ``complexity, loss`` (training MSE), ``score``,
        ``equation`` (text in the variable names), ``expression`` (an :class:`Expression`) and ``selected`` (the
        model ``best_model_`` is). A pandas DataFrame when pandas is installed, else a list of dicts."""
        if not hasattr(self, "problem_"):
            raise _not_fitted(self)
        rows = []
        for e in self.problem_.front.entries():
            expr = Expression(e["tokens"], self.variable_names_)
            rows.append({"complexity": e["complexity"], "loss": e["loss"], "score": e["score"],
                         "equation": str(expr), "expression": expr, "selected": expr == self.best_model_})
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows, columns=["complexity", "loss", "score", "equation", "expression", "selected"])

    def __sklearn_tags__(self):  # scikit-learn asks only when it is installed; it is not a dependency
        from sklearn.utils import InputTags, RegressorTags, Tags, TargetTags

        return Tags(estimator_type="regressor", target_tags=TargetTags(required=True),
                    regressor_tags=RegressorTags(), input_tags=InputTags())

    def __sklearn_is_fitted__(self):
        return hasattr(self, "best_model_")


def _warn_column_y():
    import warnings

    try:
        from sklearn.exceptions import DataConversionWarning as W
    except ImportError:
        W = UserWarning
    warnings.warn("A column-vector y was passed when a 1d array was expected; it is used as y.ravel()", W,
                  stacklevel=3)


def _not_fitted(est):
    try:
        from sklearn.exceptions import NotFittedError
    except ImportError:
        NotFittedError = AttributeError
    return NotFittedError(f"this {type(est).__name__} is not fitted yet: call fit first")


class BasicSR(_Estimator):
    """The genetic-programming expert.

    >>> model = BasicSR(population_size=50, num_generations=20, seed=0).fit(X, y)
    >>> print(model.best_model_, model.get_final_mse())
    """

    @classmethod
    def for_data(cls, **params):
        """The data-fitting preset (``nsr.config.DATA_PRESET``: fitted constants, linear scaling, polish, the
        Feynman-tuned population and the ``physics`` operators, 100k evaluations, PySR's model choice) with
        ``params`` on top."""
        return cls(**{**DATA_PRESET, **params})

    def fit(self, X, y, rng=None, progress: bool = False):
        """Fit arrays, or a DataFrame (its column names become the variable names) and a Series; ``progress``
        shows a bar of the evaluation budget (or of the generations, without one)."""
        X, y, names, _ = from_frame(X, y)
        if getattr(y, "ndim", 1) == 2 and y.shape[1] == 1:
            _warn_column_y()
        searcher = self.searcher()
        problem = searcher.problem(X, y, rng if rng is not None else np.random.default_rng(self.seed))
        if not progress:
            searcher.run([problem])
            return self._finish(problem, names)
        from tqdm import tqdm

        budget = self.max_evaluations
        with tqdm(total=budget or self.num_generations, unit=" evals" if budget else " gen", unit_scale=True,
                  leave=False) as bar:
            def tick(problems):
                done = problems[0].stats["model_evaluations"] if budget else problems[0].generation + 1
                bar.update(min(done, bar.total) - bar.n)

            searcher.run([problem], tick=tick)
        return self._finish(problem, names)


class BatchedNeuralSR(_Estimator):
    """``BatchedNeuralSR(checkpoint).batched_fit(X_list, y_list) -> (models, mses, trajectories)``.

    Problem ``i`` of a batch uses the generator ``SeedSequence([seed, i])``; the
    checkpoint loads once, on first use, and is shared by every later call.
    ``model_path`` is accepted as another name for ``checkpoint``."""

    _configs = (EvolutionConfig, SamplingConfig)
    _defaults = {**ROLLOUT_DEFAULTS, "collect_trajectory": True, "checkpoint": DEFAULT_CHECKPOINT}
    _extra = {"seed": None, "batch_size": None}

    def __init__(self, checkpoint=None, model_path=None, **params):
        if checkpoint is not None and model_path is not None and checkpoint != model_path:
            raise InputError("give checkpoint or model_path, not both")
        chosen = checkpoint if checkpoint is not None else model_path
        if chosen is not None:
            params["checkpoint"] = chosen
        super().__init__(**params)
        self.sampling_config()
        self._searcher = None

    def sampling_config(self) -> SamplingConfig:
        return self._config(SamplingConfig)

    def searcher(self) -> Searcher:
        """One searcher per configuration: the loaded model is kept across calls."""
        key = (self.evolution_config(), self.sampling_config())
        if self._searcher is None or (self._searcher.evolution, self._searcher.sampling) != key:
            self._searcher = Searcher(*key)
        return self._searcher

    def load(self):
        """Load and check the checkpoint now (it would otherwise load on the first fit)."""
        return self.searcher().load()

    def make_problems(self, X_list, y_list, rngs=None, ids=None):
        if not isinstance(X_list, (list, tuple)) or not isinstance(y_list, (list, tuple)):
            raise InputError("X_list and y_list must be lists of arrays")
        if len(X_list) != len(y_list):
            raise InputError(f"X_list has {len(X_list)} problems but y_list has {len(y_list)}")
        if not X_list:
            raise InputError("empty batch: no problems given")
        searcher, problems = self.searcher(), []
        for i, (X, y) in enumerate(zip(X_list, y_list)):
            rng = rngs[i] if rngs is not None else seed_for(self.seed if self.seed is not None else 0, i)
            try:
                problems.append(searcher.problem(X, y, rng, ids[i] if ids is not None else i))
            except ValueError as e:
                raise InputError(f"problem {i}: {e}") from None
        return problems

    def run_problems(self, problems, batch_size=None, progress=None):
        """Evolve ``problems`` in batches of ``batch_size`` (default: the estimator's, else all at once)."""
        searcher = self.searcher()
        size = batch_size or self.batch_size or len(problems)
        for start in range(0, len(problems), size):
            searcher.run(problems[start:start + size], progress)
        return problems

    def batched_fit(self, X_batch=None, y_batch=None, batch_size=None, X_list=None, y_list=None):
        """Fit every problem; returns ``(final_models, final_mses, trajectories)`` in input order."""
        X_batch = X_batch if X_batch is not None else X_list
        y_batch = y_batch if y_batch is not None else y_list
        problems = self.run_problems(self.make_problems(X_batch, y_batch), batch_size)
        self.problems_ = problems
        reported = [p.reported() for p in problems]
        models = [Expression(tokens) for tokens, _ in reported]
        mses = [mse for _, mse in reported]
        trajectories = [Trajectory(p.trajectory()) for p in problems]
        return models, mses, trajectories

    @property
    def neural(self):
        """The neural proposer (its stats: calls, model time, proposals, well-formed)."""
        return self.searcher().neural


class NeuralSR(BatchedNeuralSR):
    """Neural SR on one problem: the batch-of-one case, with BasicSR's interface."""

    def fit(self, X, y, rng=None):
        problems = self.make_problems([X], [y], rngs=[rng] if rng is not None else None)
        self.run_problems(problems)
        return self._finish(problems[0])


def batched_fit(X_batch, y_batch, checkpoint=DEFAULT_CHECKPOINT, batch_size=None, **params):
    """One call: ``(final_models, final_mses, trajectories)`` for a list of problems."""
    return BatchedNeuralSR(checkpoint, **params).batched_fit(X_batch, y_batch, batch_size)


__all__ = ["BasicSR", "NeuralSR", "BatchedNeuralSR", "batched_fit", "validate_xy", "Trajectory"]
