"""Time a multi-layer perceptron on every fastgd backend against scikit-learn's MLPClassifier.

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/mlp_vs_sklearn.py
    python benchmarks/mlp_vs_sklearn.py --rows 5000 --epochs 1     # a quick look
    python benchmarks/mlp_vs_sklearn.py --batch-sizes 32,64,128,256,512 --impls numba,cython,sklearn

The setting of the issue: a 64-128-128-10 ReLU network with a softmax output, Adam
(lr 1e-3), batch size 128 (``--batch-sizes``: each in turn, 128 first by default, then the
ends of the range 32-512), 100,000 x 64 float32 samples, 3 epochs, 2 threads. Each
implementation runs in its own process (idle threads of one runtime slow the others),
fits once untimed on a slice (compile / cache load), then the whole fit is timed; the
median of ``--repeats`` is reported.

Each row also shows its share of the float32 matmul peak, measured at the start of the
run by :func:`fastgd.bench.roofline.matmul_rate` (a 2048 x 2048 BLAS product at the same
thread count): the FLOPs of one sample's forward and backward products
(:func:`fastgd.bench.roofline.network_flops_per_sample`: 2 per multiply-add forward, 4
backward, the first layer's input gradient left out) times the samples trained per
second, over the peak.

Checks before any time is reported: the compiled backends start from the same
initialization and see the same batches as the NumPy reference, so their final training
loss must match the reference's within 1% (float32 rounding grows over thousands of Adam
steps); scikit-learn and PyTorch start from their own random initialization, so their
final training loss must be within 10% of the reference's.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np


def make_data(rows, features, classes, seed=0):
    """float32 features; labels from a random linear map of the first features."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, features)).astype(np.float32)
    y = (X[:, :16] @ rng.standard_normal((16, classes))).argmax(axis=1)
    return X, y


def run_one(impl, args):
    """Train with one implementation in this process; returns median time and final loss."""
    from threadpoolctl import threadpool_limits

    X, y = make_data(args.rows, args.features, args.classes)
    hidden = tuple(args.hidden)
    times, loss = [], None
    with threadpool_limits(args.threads, user_api="blas"):
        if impl == "sklearn":
            from sklearn.neural_network import MLPClassifier

            def fit(data, labels, epochs):
                clf = MLPClassifier(
                    hidden_layer_sizes=hidden, activation="relu", solver="adam",
                    learning_rate_init=args.lr, batch_size=args.batch_size, max_iter=epochs,
                    alpha=0.0, tol=0.0, n_iter_no_change=10**9, shuffle=True, random_state=0,
                )  # fmt: skip
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "did not converge" after max_iter
                    clf.fit(data, labels)
                return clf.loss_curve_[-1]
        elif impl == "torch":
            import torch

            torch.set_num_threads(args.threads)

            def fit(data, labels, epochs):
                layers, width = [], data.shape[1]
                for h in hidden:
                    layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
                    width = h
                net = torch.nn.Sequential(*layers, torch.nn.Linear(width, args.classes))
                optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
                Xt, yt = torch.from_numpy(data), torch.from_numpy(labels.astype(np.int64))
                generator = torch.Generator().manual_seed(0)
                for _ in range(epochs):
                    total = 0.0
                    for batch in torch.randperm(len(yt), generator=generator).split(
                        args.batch_size
                    ):
                        optimizer.zero_grad()
                        loss = torch.nn.functional.cross_entropy(net(Xt[batch]), yt[batch])
                        loss.backward()
                        optimizer.step()
                        total += loss.item() * len(batch)
                return total / len(yt)
        else:
            import fastgd

            # Glorot-uniform initialization, as scikit-learn's MLP (and close to PyTorch's)
            model = fastgd.MLP(hidden=hidden, activation="relu", init="xavier_uniform")

            def fit(data, labels, epochs):
                result = fastgd.fit(
                    data, labels, model=model, optimizer="adam", lr=args.lr,
                    batch_size=args.batch_size, epochs=epochs, seed=0, backend=impl,
                    n_threads=args.threads,
                )  # fmt: skip
                return float(result.loss_history[-1])

        fit(X[: 4 * args.batch_size], y[: 4 * args.batch_size], 1)  # compile / warm up
        for _ in range(args.repeats):
            started = time.perf_counter()
            loss = fit(X, y, args.epochs)
            times.append(time.perf_counter() - started)
    return {"impl": impl, "median_s": statistics.median(times), "times": times, "loss": loss}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch-sizes", default="128,32,512", help="comma-separated")
    parser.add_argument("--batch-size", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--impls", default="numpy,numba,cython,sklearn,torch")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one implementation, print JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return 0
    forwarded = list(argv if argv is not None else sys.argv[1:])
    peak = _matmul_peak(args.threads)
    failed = False
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        results = {}
        for impl in args.impls.split(","):
            command = [sys.executable, __file__, *forwarded, "--one", impl, "--batch-size", str(batch_size)]  # fmt: skip
            proc = subprocess.run(command, capture_output=True, text=True)
            if proc.returncode != 0:
                reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
                print(f"{impl:8s} skipped: {reason}")
                continue
            results[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
        failed |= _report(args, batch_size, results, peak)
    return 1 if failed else 0


def _matmul_peak(threads):
    """float32 GFLOP/s of a large BLAS product at ``threads`` threads (this run's peak)."""
    from fastgd.bench.roofline import matmul_rate

    return matmul_rate("float32", threads) / 1e9


def _report(args, batch_size, results, peak):
    """Print one batch size's table; returns True if a loss check failed."""
    from fastgd.bench.roofline import network_flops_per_sample

    sizes = [args.features, *args.hidden, args.classes]
    flops = network_flops_per_sample(sizes)
    reference = results.get("numpy")
    print(
        f"\nMLP {'-'.join(map(str, sizes))} ReLU, Adam, batch {batch_size}, "
        f"{args.rows:,} x {args.features} float32, {args.epochs} epochs, {args.threads} "
        f"threads, median of {args.repeats}; float32 matmul peak {peak:.0f} GFLOP/s, "
        f"{flops:,} FLOPs per sample"
    )
    print(
        f"{'impl':8s} {'time':>9s} {'vs numpy':>9s} {'vs sklearn':>11s} {'% peak':>7s} "
        f"{'final loss':>11s}  check"
    )
    failed = False
    for impl, r in results.items():
        check = "reference" if impl == "numpy" else "not checked (no numpy run)"
        if reference is not None and impl != "numpy":
            tolerance = 0.01 if impl in ("numba", "cython") else 0.10
            ok = abs(r["loss"] - reference["loss"]) <= tolerance * abs(reference["loss"])
            check = f"{'ok' if ok else 'FAILED'}: loss within {tolerance:.0%} of numpy's"
            failed |= not ok
        vs_numpy = reference["median_s"] / r["median_s"] if reference else float("nan")
        vs_sklearn = results["sklearn"]["median_s"] / r["median_s"] if "sklearn" in results else float("nan")  # fmt: skip
        time_text = "(failed)" if check.startswith("FAILED") else f"{r['median_s']:.3f} s"
        share = args.rows * args.epochs / r["median_s"] * flops / (peak * 1e9)
        ratios = [f"{v:.2f}x" if v == v else "-" for v in (vs_numpy, vs_sklearn)]  # NaN: not run
        print(f"{impl:8s} {time_text:>9s} {ratios[0]:>9s} {ratios[1]:>11s} {share:6.1%} {r['loss']:11.5f}  {check}")  # fmt: skip
    return failed


if __name__ == "__main__":
    sys.exit(main())
