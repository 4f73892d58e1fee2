"""The three ways a Dask fit trains, each plugged into the single-machine machinery.

- :class:`ChunkObjective`: the penalised full-batch objective of
  :mod:`fastgd.training.objective`, its data part summed over chunks; Newton and L-BFGS
  (:func:`fastgd.training.solvers.solve`) run on the driver unchanged.
- :class:`FullBatchDriver`: full-batch first-order training. It stands in for a backend
  in :func:`fastgd.training.trainer.train` and runs the NumPy reference's epoch loop
  (:func:`fastgd.backends.numpy.update.train_loop`: update, penalty, clipping, loss
  history, divergence and tolerance rules) with the gradient of all chunks.
- :class:`LocalSGDDriver`: mini-batch training as local SGD with parameter averaging.
  Each round, every chunk runs the compiled epoch loop over its next ``sync_every``
  batches (or its whole epoch) from the current parameters and optimizer state; the
  driver averages parameters, batch-norm running averages and optimizer state, weighted by
  the (sample-weighted) rows each chunk trained on. The update count ``t`` advances by the
  most batches any chunk ran. Row orders come from ``(seed, epoch, chunk)``, so a fixed
  chunking and seed give the same result wherever the chunks run.
"""

import numpy as np

from ..backends.numpy.update import penalty_value, restore, snapshot, train_loop
from ..specs import stopping
from ..specs.network import layout
from ..training.objective import Objective
from .tasks import RoundStart, full_batch_share, local_sgd, unpacked, warm_up


class ChunkObjective(Objective):
    """:class:`~fastgd.training.objective.Objective` over the chunks of a
    :class:`~fastgd.distributed.data.ChunkedData`: each data pass is one round of
    :func:`~fastgd.distributed.tasks.full_batch_share` tasks and a fixed-order tree sum;
    the penalty is added once, on the driver."""

    def __init__(self, cluster, backend_name, spec, data, l2):
        super().__init__(None, spec, data, l2, 1)
        self.cluster, self.backend_name = cluster, backend_name

    def _terms(self, x, hessian, gram_dtype="float64"):
        data, p = self.data, self.spec.n_params
        size = (p * (p + 1) // 2 if hessian else p) * 8
        per_chunk = [(float(s),) for s in data.scales]
        x = np.asarray(x, dtype=np.float64)
        args = (self.backend_name, self.model, x, hessian, gram_dtype)
        loss, grad, H = self.cluster.reduce(full_batch_share, data.chunks, args, per_chunk, size)  # fmt: skip
        return loss, grad, None if H is None else unpacked(H, p)


def _n_trained(spec):
    """Entries the optimizer moves: untrained intercepts stay as they are."""
    if spec.n_layers or spec.fit_intercept:
        return spec.n_params
    return spec.n_weights


class FullBatchDriver:
    """Full-batch first-order training over chunks (a backend for ``trainer.train``)."""

    def __init__(self, objective, backend_name):
        self.objective, self.name = objective, backend_name
        model = objective.model
        self.layout = layout(model.sizes, model.batch_norm) if objective.spec.n_layers else None

    def max_threads(self):
        return 1

    def train_epochs(self, model, data, state, update, block, n_threads):
        """See :meth:`fastgd.backends.contract.Backend.train_epochs`."""
        spec = self.objective.spec
        if block.n_epochs == 0:  # load the kernels in the workers (timed as compile time)
            self.objective._terms(state.params, None)
            return 0, stopping.MAX_EPOCHS

        def batch_step(rows, epoch):
            loss, grad, _ = self.objective._terms(state.params, None)
            if self.layout is not None:
                self._layer_norms(grad, block.grad_norms[epoch])
            return loss, grad.astype(state.params.dtype)

        n = data.X.shape[0]
        return train_loop(n, batch_step, state, update, block, spec.n_weights, _n_trained(spec))

    def _layer_norms(self, grad, out):
        sizes, offsets = self.objective.model.sizes, self.layout["weight"]
        for layer in range(len(sizes) - 1):
            w = grad[offsets[layer] : offsets[layer] + sizes[layer] * sizes[layer + 1]]
            out[layer] = np.sqrt(w @ w)


class LocalSGDDriver:
    """Mini-batch SGD as local SGD with averaging (a backend for ``trainer.train``).

    Parameters
    ----------
    cluster : fastgd.distributed.cluster.Cluster
    backend_name : str
    spec : LinearModelSpec or NetworkSpec
    data : fastgd.distributed.data.ChunkedData
    shuffle : {"rows", "blocks"} or None
        ``fit``'s ``shuffle`` mode (None: rows in order).
    seed : int or None
    sync_every : int or None
        Average after this many batches of every chunk; None: after every epoch.
    """

    def __init__(self, cluster, backend_name, spec, data, shuffle, seed, sync_every):
        self.cluster, self.name, self.spec, self.data = cluster, backend_name, spec, data
        self.shuffle, self.sync_every, self.epoch = shuffle, sync_every, 0
        entropy = np.random.SeedSequence().entropy if seed is None else seed
        self.seed = int(entropy) % (1 << 63)

    def max_threads(self):
        return 1

    def train_epochs(self, model, data, state, update, block, n_threads):
        """See :meth:`fastgd.backends.contract.Backend.train_epochs`."""
        if block.n_epochs == 0:  # load the kernels in the workers (timed as compile time)
            self.cluster.map(warm_up, self.data.chunks, (self.name, model, state, update))
            return 0, stopping.MAX_EPOCHS
        for e in range(block.n_epochs):
            if state.stop_state[stopping.INTERRUPT]:  # Ctrl-C: at the end of an epoch
                return e, stopping.INTERRUPTED
            saved = snapshot(state)
            loss = self._epoch(model, state, update, block.lr_epochs[e], block.grad_norms, e)
            loss += penalty_value(state.params, self.spec.n_weights, update.hyper)
            block.history[e] = loss
            self.epoch += 1
            if not (np.isfinite(loss) and np.all(np.isfinite(state.params))):
                restore(state, saved)
                return e + 1, stopping.DIVERGED
            if stopping.tolerance_rule(loss, update.tol, update.n_iter_no_change, state.stop_state):  # fmt: skip
                return e + 1, stopping.CONVERGED
        return block.n_epochs, stopping.MAX_EPOCHS

    def _segments(self, batch_size):
        """Row positions ``[first, last)`` of each round of an epoch."""
        if self.sync_every is None:
            return [(0, int(self.data.rows.max()))]
        span = self.sync_every * batch_size
        n_rounds = -(-int(self.data.rows.max()) // span)
        return [(r * span, (r + 1) * span) for r in range(n_rounds)]

    def _epoch(self, model, state, update, lr, grad_norms, e):
        """One epoch of rounds; the epoch's mean data loss (NaN when a chunk diverged)."""
        n_layers = grad_norms.shape[1]
        seeds = [((self.seed, self.epoch, i) if self.shuffle else None,) for i in range(len(self.data.chunks))]  # fmt: skip
        loss_sum, norm_sq, batches = 0.0, np.zeros(n_layers), 0
        for segment in self._segments(int(update.batch_size)):
            start = RoundStart(state, self.spec.n_weights, n_layers)
            args = (self.name, model, start, update, float(lr), segment, self.data.weight_scale,
                    self.shuffle or "rows")  # fmt: skip
            results = [r for r in self.cluster.map(local_sgd, self.data.chunks, args, seeds) if r]
            if not all(np.isfinite(r["loss_sum"]) and np.all(np.isfinite(r["params"])) for r in results):  # fmt: skip
                return np.nan
            _average(state, results)
            loss_sum += sum(r["loss_sum"] for r in results)
            norm_sq += sum(r["batches"] * r["grad_norms"] ** 2 for r in results)
            batches += sum(r["batches"] for r in results)
        if n_layers:
            grad_norms[e] = np.sqrt(norm_sq / max(batches, 1))
        return loss_sum / self.data.X.shape[0]


def _average(state, results):
    """Parameters, running averages and optimizer state averaged in chunk order, weighted
    by the rows (sample weights) each chunk trained on; ``t`` advances by the most
    batches any chunk ran."""
    weights = np.array([r["weight"] for r in results])
    total = weights.sum()
    coefficients = weights / total if total > 0 else np.full(len(results), 1.0 / len(results))
    for name, target in (("params", state.params), ("running", state.running),
                         ("opt_state", state.opt_state)):  # fmt: skip
        acc = np.zeros(target.shape)
        for c, r in zip(coefficients, results, strict=True):
            acc += c * r[name]
        target[...] = acc
    state.step_count[0] += max(r["batches"] for r in results)
