"""nbval re-executes the committed notebooks, which write tables, figures and the README's results
section as a reproduction does. Under the test command those writes go to a temporary copy of
results/ and README.md, so that it leaves the tree as it found it on any machine (a figure rendered
on another machine can differ by a few pixels from the committed one)."""

import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    tmp = Path(tempfile.mkdtemp(prefix="cdlib-nbval-"))
    shutil.copytree(ROOT / "results", tmp / "results")
    shutil.copy(ROOT / "README.md", tmp / "README.md")
    # the kernels nbval starts inherit this process's environment
    os.environ.update(
        CDLIB_RESULTS=str(tmp / "results"),
        CDLIB_FIGURES=str(tmp / "figures"),
        CDLIB_README=str(tmp / "README.md"),
    )
    config.add_cleanup(lambda: shutil.rmtree(tmp, ignore_errors=True))
