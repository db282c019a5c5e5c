"""The module map in ARCHITECTURE.md is true: every module listed, imports only go up the table, scripts are thin."""
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["basic_sr.py", "generate_traces.py", "batched_neural_sr.py", "dagger_relabel.py", "test_batched_sr.py",
           "training/train.py", "training/prepare_data.py", "training/dagger.py", "datasets/generate_expressions.py"]


def table_order():
    text = open(os.path.join(ROOT, "ARCHITECTURE.md")).read()
    return re.findall(r"^\| `nsr/(\w+)\.py` \|", text, flags=re.M)


def top_level_imports(module):
    """The nsr modules ``module`` imports when it is imported (not inside functions)."""
    tree = ast.parse(open(os.path.join(ROOT, "nsr", module + ".py")).read())
    deps = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                deps.add(node.module.split(".")[0])
            elif node.level == 1:
                deps.update(a.name for a in node.names)
            elif node.module and node.module.startswith("nsr."):
                deps.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith("nsr."))
    return deps


def test_every_module_is_in_the_map():
    modules = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "nsr")) if f.endswith(".py") and f != "__init__.py")
    assert sorted(table_order()) == modules


def test_modules_import_only_modules_above_them():
    order = table_order()
    for i, m in enumerate(order):
        later = top_level_imports(m) & set(order[i:])
        assert not later, f"nsr/{m}.py imports {sorted(later)}, listed below it in ARCHITECTURE.md"


def test_scripts_do_not_edit_sys_path():
    for s in SCRIPTS:
        assert "sys.path" not in open(os.path.join(ROOT, s)).read(), s
