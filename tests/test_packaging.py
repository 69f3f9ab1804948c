"""What the repository ships: environment.yml and pyproject.toml list the same dependencies, and the
numbered notebooks are committed executed."""

import json
import re

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def names(reqs):
    return {
        re.split(r"[<>=!~\[ ;]", r.strip(), maxsplit=1)[0].lower().replace("_", "-") for r in reqs
    }


def test_environment_yml_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = names(py["dependencies"]) | names(py["optional-dependencies"]["test"])
    assert "torch" in deps and "nbval" in deps
    env = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda = {d for d in env if isinstance(d, str)}
    pip = next(d["pip"] for d in env if isinstance(d, dict))
    listed = names(c for c in conda if not c.startswith("python") and c != "pip") | names(pip)
    assert listed == deps


def test_the_numbered_notebooks_are_committed_executed():
    """Every code cell of notebooks/NN_*.ipynb has run (`make figures` executes them): a notebook
    rebuilt by tools/build_notebooks.py and committed as it is shows no table, and nbval, which
    compares the outputs it stores, would check nothing in it."""
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        unrun = [
            i for i, c in enumerate(cells) if c["cell_type"] == "code" and not c["execution_count"]
        ]
        assert not unrun, (
            f"{path.name}: code cells {unrun} have not run; execute it with `make figures` "
            "before committing"
        )


def test_the_notebooks_hold_the_cells_tools_build_notebooks_writes():
    """Every numbered notebook's cells are those of tools/build_notebooks.py, in its order (the
    parameters cell papermill injects aside): a cell edited in one and not the other is caught."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bn", ROOT / "tools" / "build_notebooks.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for name, want in build.NOTEBOOKS.items():
        cells = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        have = [
            (c["cell_type"], "".join(c["source"]))
            for c in cells
            if "injected-parameters" not in c["metadata"].get("tags", [])
        ]
        assert have == [(c["cell_type"], c["source"]) for c in want], (
            f"{name}.ipynb differs from tools/build_notebooks.py's cells"
        )


def test_every_function_the_readme_and_the_package_cite_exists():
    """A name in backticks, `module.name`, in README.md or a docstring or comment of cdlib, whose
    module is one of cdlib's, names something that module has: a renamed or moved function leaves
    no stale pointer (`report.violations` once named what is `audit.violations`)."""
    import importlib
    import pkgutil

    import cdlib

    modules = {m.name for m in pkgutil.iter_modules(cdlib.__path__)}
    texts = [ROOT / "README.md", *sorted((ROOT / "cdlib").glob("*.py"))]
    cited = {
        (m, n, path.name)
        for path in texts
        for m, n in re.findall(r"`([a-z_]+)\.([A-Za-z_]\w*)", path.read_text())
        if m in modules and n not in ("py", "c")  # (not a file's name: `plots.py`, `rowadam.c`)
    }
    missing = sorted(
        f"{where}: {m}.{n}"
        for m, n, where in cited
        if not hasattr(importlib.import_module(f"cdlib.{m}"), n)
    )
    assert not missing, missing
