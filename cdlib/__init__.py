"""cdlib: Collaborative Distillation (Lee et al., ICDM 2019) for top-N recommendation.

Modules, one idea each: data (datasets and splits), models (CDAE, NeuMF), losses (CF, CD, RD),
samplers (negatives, rank-aware CD sampling), metrics (HR, NDCG, MRR), train (runs), runs
(records and provenance), experiments (the notebooks' grids and tables), report (claims, README),
plots (figures), reproduce (the parallel papermill runner), bench (timings).
"""
__version__ = "0.1.0"
