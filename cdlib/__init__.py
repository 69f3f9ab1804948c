"""cdlib: Collaborative Distillation (Lee et al., ICDM 2019) for top-N recommendation.

    import cdlib
    result = cdlib.distill("ratings.csv", user_col="userId", item_col="movieId", rating_col="rating",
                           min_rating=4, out="my_model")       # teacher and CD student, trained or reused
    result.student.recommend(["42"], k=10)
    student = cdlib.load_model("my_model/student.pt")         # later, from the files
    model = cdlib.from_run(cdlib.Config(dataset="ml-100k", size=20, method="cd"))   # a recorded run

Modules, one idea each, imported downwards: paths (where files are), runs (records, provenance),
dataset (the split and its negatives), files (a user's own interactions file), data (the six
datasets), index (training pairs by user), models (CDAE, NeuMF), losses (CF, CD, RD), samplers
(negatives, rank-aware CD sampling), metrics (HR, NDCG, MRR), methods (none, RD and CD as units of
one interface), config (a run's configuration, how runs execute), loop (the training loop), train
(the store of runs and weights), saved (models that recommend), analyses (protocol analyses),
agreement (configurations run two ways, paired over seeds), tuning (the tuning stage: each cell's
settings chosen on validation), experiments (the notebooks' grids),
claim_tables (the run tables the claims read), costs (CPU hours), effects (effects, intervals,
pooling, verdicts), report (the claims table), sentences (the results in sentences), readme (the
README's results), plots (figures), bench (timings), stepbench (the dense step against the sparse
ones), distill (python -m cdlib.distill DATA), reproduce (the parallel papermill runner), backlog
(a profile's runs still to train, shared by workers).
"""

import importlib

__version__ = "0.1.0"

# the package's API, imported on first use so that `import cdlib` stays light (torch loads later)
_API = {
    "distill": "cdlib.distill",
    "load_model": "cdlib.saved",
    "from_run": "cdlib.saved",
    "Config": "cdlib.config",
    "Execution": "cdlib.config",
}
__all__ = sorted(_API)


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'cdlib' has no attribute {name!r}")
    module = importlib.import_module(_API[name])
    return module if name == "distill" else getattr(module, name)
