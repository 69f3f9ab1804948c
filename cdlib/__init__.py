"""cdlib: Collaborative Distillation (Lee et al., ICDM 2019) for top-N recommendation.

Modules, one idea each: data (datasets and splits), models (CDAE, NeuMF), losses (CF, CD, RD),
samplers (negatives, rank-aware CD sampling), metrics (HR, NDCG, MRR), train (runs), runs
(records and provenance), experiments (the notebooks' grids and tables), report (claims, README),
plots (figures), reproduce (the parallel papermill runner), bench (timings), methods (none, RD
and CD as units of one interface), saved (saved models that recommend), distill (the command that
distils a user's own data: python -m cdlib.distill DATA).
"""
__version__ = "0.1.0"


def load_model(path, card=None, device=None):
    """A saved teacher or student (cdlib.saved.load_model): `.recommend(user_ids, k=10)`."""
    from .saved import load_model as _load
    return _load(path, card, device)
