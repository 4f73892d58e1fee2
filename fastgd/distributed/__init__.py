"""Data-parallel training on Dask: ``fastgd.fit`` on ``dask.array`` / ``dask.dataframe`` input.

Nothing here imports Dask until a Dask collection reaches :func:`fastgd.fit`
(``import fastgd`` stays free of it). The pieces:

- :mod:`.data`: checks the chunk structure (known row chunks, whole rows per chunk),
  validates and converts every chunk in a worker (the NaN check of a chunk runs where the
  chunk lives) and keeps the prepared chunks in worker memory with their lineage;
- :mod:`.cluster`: one round of tasks, one per chunk, on the current ``distributed.Client``
  or Dask's local scheduler; results come back in chunk order and are summed by a fixed
  pairwise tree, so the same chunking gives the same numbers bit for bit;
- :mod:`.tasks`: what runs in a worker: a chunk's share of the full-batch loss, gradient
  (and Hessian), or a round of local SGD over its rows;
- :mod:`.drivers`: the full-batch objective for Newton / L-BFGS, the full-batch
  first-order loop and averaged local SGD, plugged into the single-machine trainer and
  solvers;
- :mod:`.fit`: ``fit`` for Dask input.
"""


def is_dask_collection(obj):
    """True for a Dask collection (array, data frame, series), without importing Dask."""
    return callable(getattr(type(obj), "__dask_graph__", None))
