"""Recurrent networks as arrays: cell codes, the equations, and the flat parameter layout.

A recurrent network reads sequences ``x_0, ..., x_{T-1}`` (``f`` features per step)
through ``L`` stacked recurrent layers of ``h`` units, then a dense *head* maps the last
hidden state (``output="last"``) or the hidden state of every step (``"sequence"``) to
the ``k`` decision values of the task. The equations are those of ``torch.nn.LSTM``,
``torch.nn.GRU`` and ``torch.nn.RNN`` (``batch_first=True``); ``sigma`` is the logistic
function, ``*`` the elementwise product, states start at zero:

- **LSTM** (``G = 4`` gates, in the order i, f, g, o):
  ``a = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh``; ``i, f, o = sigma(a_i, a_f, a_o)``,
  ``g = tanh(a_g)``; ``c_t = f * c_{t-1} + i * g``; ``h_t = o * tanh(c_t)``.
- **GRU** (``G = 3``, order r, z, n): ``r = sigma(W_ir x + b_ir + W_hr h + b_hr)``, ``z``
  likewise, ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`` (the reset gate multiplies
  the hidden projection *with* its bias), ``h_t = (1 - z) * n + z * h_{t-1}``.
- **tanh RNN** (``G = 1``): ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

Layer ``l > 0`` reads the hidden states of layer ``l - 1``. A head layer ``j`` maps
``u`` to ``W_j u + b_j``; the hidden head layers are then activated, the last one gives
the decision values that go to the loss of the task.

**Variable lengths.** A sequence of length ``len < T`` is padded: at steps ``t >= len``
the state is carried unchanged (``h_t = h_{t-1}``, ``c_t = c_{t-1}``), so the last state
is that of step ``len - 1`` (PyTorch's packed ``h_n``), and with ``output="sequence"``
the padded steps are left out of the loss, whose mean is over the valid (row, step)
pairs.

**Flat vector** (weights first, so that ``params[:n_weights]`` are the penalized entries;
every matrix in PyTorch's orientation, (out, in), row-major)::

    W_ih_0 (G h, f), W_hh_0 (G h, h), ..., W_ih_{L-1} (G h, h), W_hh_{L-1} (G h, h)
    head W_1 (n_1, h), ..., W_H (k, n_{H-1})                          n_weights entries
    b_ih_0 (G h), b_hh_0 (G h), ..., b_ih_{L-1}, b_hh_{L-1}
    head b_1 (n_1), ..., b_H (k)

(the dense layers of :class:`fastgd.MLP` are stored (in, out); the recurrent model keeps
PyTorch's orientation so that its named views load into ``torch.nn`` unchanged).
"""

import numpy as np

LSTM = 0
GRU = 1
TANH = 2
CELLS = {"lstm": LSTM, "gru": GRU, "tanh": TANH}
CELL_NAMES = {code: name for name, code in CELLS.items()}
GATES = {LSTM: 4, GRU: 3, TANH: 1}


def layout(cell, n_features, hidden, n_layers, head_sizes):
    """Offsets of every block of the flat parameter vector.

    Parameters
    ----------
    cell : int
        A cell code (:data:`LSTM`, :data:`GRU`, :data:`TANH`).
    n_features, hidden, n_layers : int
    head_sizes : sequence of int
        Widths of the head, ``[hidden, n_1, ..., k]``.

    Returns
    -------
    dict with int64 arrays ``w_ih``, ``w_hh``, ``b_ih``, ``b_hh`` (n_layers,), ``head_w``,
    ``head_b`` (len(head_sizes) - 1,) and ints ``n_weights``, ``n_params``.
    """
    gh = GATES[int(cell)] * hidden
    n_head = len(head_sizes) - 1
    w_ih, w_hh, b_ih, b_hh = (np.zeros(n_layers, dtype=np.int64) for _ in range(4))
    head_w, head_b = np.zeros(n_head, dtype=np.int64), np.zeros(n_head, dtype=np.int64)
    offset = 0
    for layer in range(n_layers):
        w_ih[layer] = offset
        offset += gh * (n_features if layer == 0 else hidden)
        w_hh[layer] = offset
        offset += gh * hidden
    for j in range(n_head):
        head_w[j] = offset
        offset += int(head_sizes[j]) * int(head_sizes[j + 1])
    n_weights = offset
    for layer in range(n_layers):
        b_ih[layer] = offset
        b_hh[layer] = offset + gh
        offset += 2 * gh
    for j in range(n_head):
        head_b[j] = offset
        offset += int(head_sizes[j + 1])
    return dict(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, head_w=head_w, head_b=head_b,
                n_weights=n_weights, n_params=offset)  # fmt: skip


# float32 kernels evaluate tanh (and the sigmoid, as 0.5 + 0.5 tanh(x / 2)) as the rational
# function x P(x^2) / Q(x^2) of x clamped to [-TANH_CLAMP, TANH_CLAMP], the result clamped
# to [-1, 1]: only multiply-adds and one division, so the gate loops vectorize, where a
# call to libm's tanhf or expf per element does not. The coefficients were fitted here
# (weighted least squares on the relative error, iterated) to tanh on [0, 9]; in float32
# the absolute error is below 3.4e-7 everywhere (about 5 ulp of 1). float64 kernels use
# libm, as the NumPy reference does.
TANH_CLAMP = 9.0
TANH_P = (
    0.9999999975404305, 0.1308602606724582, 0.0031061615795704126, 1.117604580804453e-05,
    -2.0305364695052594e-08, 5.312259544516103e-11, -8.566427456752759e-14,
)  # fmt: skip
TANH_Q = (1.0, 0.46419355066248247, 0.024504089558936484, 0.00025492788649432354)

# float32 kernels compute a step's two recurrent products, C = A B with B = W_hh^T
# (forward, h_{t-1} W_hh^T) or B = W_hh (backward, dA_h W_hh), with their own register
# tiles, not BLAS: OpenBLAS packs W_hh again at every call (a profile at hidden 128 had
# 14% of its samples in OpenBLAS's packing, 20% in its multiply). B is packed once per
# layer and batch (:func:`packed_entries`) into strips of STRIP columns, each laid out
# k by k. A tile of C, TILE_ROWS rows by STRIP columns, sums over k in order in
# 2 * TILE_ROWS vector registers of 8 floats, reading one row of the strip (two vector
# loads) and one value of A per row at each k. Measured 70-87 GFLOP/s on one core from
# hidden 32 to 128, against 34-62 for the earlier loops and 44-47 for OpenBLAS at hidden
# 128. float64 kernels use BLAS.
STRIP = 16
TILE_ROWS = 6


def packed_entries(K, N):
    """Entries of a (K, N) matrix packed into strips of :data:`STRIP` columns (the last
    strip padded with zeros)."""
    return -(-N // STRIP) * STRIP * K


def tanh_rational(x):
    """The rational tanh of the float32 kernels, in NumPy (elementwise; for tests)."""
    x = np.clip(x, -TANH_CLAMP, TANH_CLAMP)
    x2 = x * x
    p = np.zeros_like(x) + TANH_P[-1]
    for a in TANH_P[-2::-1]:
        p = p * x2 + a
    q = np.zeros_like(x) + TANH_Q[-1]
    for a in TANH_Q[-2::-1]:
        q = q * x2 + a
    return np.clip(x * p / q, -1.0, 1.0)
