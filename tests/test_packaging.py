"""environment.yml and pyproject.toml list the same dependencies."""

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
