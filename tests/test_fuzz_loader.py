"""A seeded slice of bench/fuzz_loader.py: mutated and hostile files through the real loaders, each in a
worker subprocess (so a crash or a hang is an outcome, not the end of pytest)."""
from bench import fuzz_loader


def test_fuzz_slice_has_no_findings(tmp_path):
    # heavy=False: no gzip bomb (it takes the 4 GiB limit's worth of zlib). The hang limit is looser than
    # the benchmark's 10 s: the slowest attacks (10**6-deep tuples) take a few seconds on a busy machine.
    summary = fuzz_loader.run(inputs=3000, seed=20260101, workers=2, timeout=30, findings=str(tmp_path), heavy=False)
    assert summary["inputs"] == 3000
    # A validator's over-long message (load() shortens it to one line) is still an InputError for the user;
    # the benchmark reports it, this test leaves it to the validators' own tests.
    problems = [(f["outcome"], f["class"], f["base"], f.get("type"), f.get("msg", "")[:200])
                for f in summary["finding_list"] if f["outcome"] != "validator_message"]
    assert not problems, problems
    assert set(summary["totals"]) <= {"valid", "input_error", "consumer_refused", "validator_message"}
    assert summary["totals"].get("valid", 0) > 100 and summary["totals"].get("input_error", 0) > 1000


def test_every_base_file_is_valid_and_used_by_its_consumers(tmp_path):
    """The mutations start from files that load and that the consumers (a run, relabeling, examples) accept:
    otherwise every mutant would stop at the first refusal and the consumers would go untested."""
    import gzip

    from nsr.datasets import load_expressions
    from nsr.traces import load_traces

    for name, (kind, raw) in fuzz_loader.base_files().items():
        path = tmp_path / f"{name}.pkl.gz"
        path.write_bytes(gzip.compress(raw))
        obj = (load_traces if kind == "traces" else load_expressions)(str(path))
        assert fuzz_loader._consume(kind, obj) == {"outcome": "valid"}, name
