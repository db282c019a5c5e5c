"""nsr/config.py: every parameter is checked the same way from a Python call, a file (from_dict) and a flag
(add_arguments); the generated flags give the same config as the Python call."""
import argparse
import dataclasses
import math

import numpy as np
import pytest

from nsr.config import (ConfigError, EvolutionConfig, RunConfig, SamplingConfig, add_arguments,
                        from_args)
from nsr.datasets import DatasetConfig
from nsr.safe_io import InputError

CONFIGS = (EvolutionConfig, SamplingConfig, RunConfig, DatasetConfig)


def _fields(cls):
    return [(cls, f) for f in dataclasses.fields(cls)]


ALL_FIELDS = [cf for cls in CONFIGS for cf in _fields(cls)]
IDS = [f"{cls.__name__}.{f.name}" for cls, f in ALL_FIELDS]


def bad_values(rule):
    """Values ``rule`` must refuse: wrong type, bool for a number, NaN/inf, out of range, None when required."""
    out = []
    if not rule.optional:
        out.append(None)
    if rule.kind == "int":
        out += ["3", True, False, 2.5, np.float64(2.0), math.nan, math.inf, [1]]
        if rule.lo is not None:
            out.append(int(rule.lo) - 1)
        if rule.hi is not None:
            out.append(int(rule.hi) + 1)
    elif rule.kind == "float":
        out += ["0.5", True, math.nan, math.inf, -math.inf, [0.5]]
        if rule.lo is not None:
            out.append(rule.lo if rule.lo_open else rule.lo - 1.0)
        if rule.hi is not None:
            out.append(rule.hi + 1.0)
    elif rule.kind == "bool":
        out += [1, 0, "true", 1.0]
    elif rule.kind == "str":
        out += [3, b"x", ["a"]]
        if rule.choices is not None:
            out.append("bogus")
    elif rule.kind == "floats":
        out += ["1.0", 1.0, (), (math.nan,), (math.inf,), ("a",), (True,)]
    elif rule.kind == "names":
        out += ["+", ("bogus",), (3,)]
    else:
        raise AssertionError(f"no bad values for kind {rule.kind}")
    return out


@pytest.mark.parametrize("cls,f", ALL_FIELDS, ids=IDS)
def test_every_field_refuses_bad_values_naming_the_field(cls, f):
    rule = f.metadata["rule"]
    values = bad_values(rule)
    assert values
    for v in values:
        with pytest.raises(ConfigError, match=rf"\b{f.name}\b") as e:
            cls(**{f.name: v})
        assert isinstance(e.value, InputError) and isinstance(e.value, ValueError)  # CLIs: one line, exit 2
        assert "\n" not in str(e.value)
        # the same check when the value comes from a file, and the message says where
        with pytest.raises(ConfigError, match=rf"^trace.pkl.gz: record 3: .*\b{f.name}\b"):
            cls.from_dict({f.name: v}, "trace.pkl.gz: record 3: ")


@pytest.mark.parametrize("cls", CONFIGS, ids=[c.__name__ for c in CONFIGS])
def test_defaults_are_valid_and_from_dict_round_trips(cls):
    default = cls()
    assert cls.from_dict(default.to_dict()) == default
    assert cls.from_dict({**default.to_dict(), "unknown_key_from_a_newer_file": 1}) == default  # ignored
    for bad in ([], "x", None):
        with pytest.raises(ConfigError, match="must be a dict"):
            cls.from_dict(bad, "f: ")
    with pytest.raises(dataclasses.FrozenInstanceError):
        default.seed = 1  # frozen (any attribute)


def test_numbers_are_normalised_and_numpy_scalars_accepted():
    cfg = EvolutionConfig(population_size=np.int64(7), crossover_prob=1, constants=[1, np.float32(0.5)],
                          binary_operators=["+"], unary_operators=[])
    assert cfg.population_size == 7 and type(cfg.population_size) is int
    assert cfg.crossover_prob == 1.0 and type(cfg.crossover_prob) is float
    assert cfg.constants == (1.0, 0.5) and cfg.binary_operators == ("+",) and cfg.unary_operators == ()
    assert cfg.to_dict()["constants"] == [1.0, 0.5]  # plain data for files
    assert cfg.operators() == (("+",), ())
    assert RunConfig(seed=np.uint32(5)).seed == 5


def test_replace_is_validated_too():
    cfg = EvolutionConfig()
    assert cfg.replace(population_size=5).population_size == 5 and cfg.population_size == 100
    with pytest.raises(ConfigError, match="population_size"):
        cfg.replace(population_size=1)
    with pytest.raises(ConfigError, match="operator"):
        cfg.replace(operator_set="arith", binary_operators=(), unary_operators=())  # no operators at all


def test_optional_fields_take_none():
    for cls, f in ALL_FIELDS:
        if f.metadata["rule"].optional:
            assert getattr(cls(**{f.name: None}), f.name) is None


# ----------------------------------------------------------------------------
# flags


def another_value(f):
    """A valid value of field ``f`` other than its default, and the flags that ask for it."""
    rule, d = f.metadata["rule"], f.default
    if rule.kind == "bool":
        v = not d
        flag = f.metadata.get("flag") or f"--{f.name}"
        return v, [flag]
    if rule.kind == "int":
        v = (d if d is not None else int(rule.lo or 0)) + 1
        if rule.hi is not None and v > rule.hi:
            v = d - 1
        return v, [f"--{f.name}", str(v)]
    if rule.kind == "float":
        if rule.hi is not None:
            v = rule.lo + 0.25 * (rule.hi - rule.lo)
        else:
            v = 2.0 * (d if d is not None else 1.0) + 0.5
        return v, [f"--{f.name}", repr(v)]
    if rule.kind == "str":
        v = next(c for c in rule.choices if c != d) if rule.choices else f"value-of-{f.name}"
        return v, [f"--{f.name}", v]
    if rule.kind == "floats":
        v = (0.5, 2.0)
        return v, [f"--{f.name}", "0.5", "2.0"]
    raise AssertionError(rule.kind)


def _parser(cls, **kw):
    p = argparse.ArgumentParser()
    add_arguments(p, cls, **kw)
    return p


@pytest.mark.parametrize("cls", CONFIGS, ids=[c.__name__ for c in CONFIGS])
def test_flags_parse_to_the_same_config_as_the_python_call(cls):
    p = _parser(cls)
    assert from_args(cls, p.parse_args([])) == cls()  # no flags: the defaults
    flagged = [f for f in dataclasses.fields(cls) if f.metadata["cli"]]
    assert flagged
    values, argv = {}, []
    for f in flagged:
        v, flags = another_value(f)
        values[f.name] = v
        argv += flags
    assert from_args(cls, p.parse_args(argv)) == cls(**values)
    for f in flagged:  # and one flag at a time (with the one it needs, where it needs one)
        v, flags = another_value(f)
        extra = NEEDS.get(f.name, {})
        argv = flags + [a for k, x in extra.items() for a in (f"--{k}", str(x))]
        assert from_args(cls, p.parse_args(argv)) == cls(**{f.name: v}, **extra), f.name


NEEDS = {"polish": {"constant_fitting": 10}}  # cross-field rules (EvolutionConfig.validate)


def test_fields_without_a_flag_are_not_flags():
    p = _parser(EvolutionConfig)
    names = {a.dest for a in p._actions}
    assert {"binary_operators", "unary_operators", "collect_trajectory"}.isdisjoint(names)
    assert {f.name for f in dataclasses.fields(EvolutionConfig)} - {"binary_operators", "unary_operators", "collect_trajectory"} <= names
    assert not {"constrained", "dtype"} & {a.dest for a in _parser(SamplingConfig)._actions}


def test_no_early_stop_flag():
    p = _parser(EvolutionConfig)
    assert from_args(EvolutionConfig, p.parse_args([])).early_stop is True
    assert from_args(EvolutionConfig, p.parse_args(["--no_early_stop"])).early_stop is False
    with pytest.raises(SystemExit):
        p.parse_args(["--early_stop"])  # the True default is switched off, not on
    flag = next(a for a in p._actions if "--no_early_stop" in a.option_strings)
    assert flag.help.startswith("switch off")  # the help says what the flag does, not what the field means


@pytest.mark.parametrize("cls,f", [cf for cf in ALL_FIELDS if cf[1].metadata["cli"]
                                   and cf[1].metadata["rule"].kind in ("int", "float", "floats")],
                         ids=[i for cf, i in zip(ALL_FIELDS, IDS) if cf[1].metadata["cli"]
                              and cf[1].metadata["rule"].kind in ("int", "float", "floats")])
def test_bad_flag_values_are_one_line_errors_naming_the_flag(cls, f, capsys):
    from nsr.cli import ArgumentParser

    p = ArgumentParser(prog="x")
    add_arguments(p, cls)
    rule = f.metadata["rule"]
    bad = ["nan", "abc"] + ([str(int(rule.lo) - 1)] if rule.kind == "int" and rule.lo is not None else [])
    for text in bad:
        with pytest.raises(SystemExit) as e:
            p.parse_args([f"--{f.name}", text])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and f"--{f.name}" in err, err


def test_add_arguments_defaults_override_and_only_exclude():
    p = _parser(EvolutionConfig, defaults={"population_size": 20, "operator_set": None}, only=("population_size",
                                                                                                 "operator_set"))
    args = p.parse_args([])
    assert vars(args) == {"population_size": 20, "operator_set": None}
    # a None default (the input file's own) is left to the caller; overrides given to from_args win
    cfg = from_args(EvolutionConfig, args, operator_set="full")
    assert cfg.population_size == 20 and cfg.operator_set == "full"
    assert "max_size" in vars(_parser(EvolutionConfig, exclude=("population_size",)).parse_args([]))
    assert "population_size" not in vars(_parser(EvolutionConfig, exclude=("population_size",)).parse_args([]))


def test_rollout_batch_size_default():
    assert RunConfig().neural_batch_size == 32 and RunConfig(batch_size=5).neural_batch_size == 5
