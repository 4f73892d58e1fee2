"""The ``fastgd`` command line: ``demo``, ``config``, ``bench``, ``train``, ``predict``."""

import argparse
import sys


def main(argv=None):
    """Entry point of the ``fastgd`` console script and ``python -m fastgd``."""
    parser = argparse.ArgumentParser(prog="fastgd", description="Fast gradient descent on the CPU.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="fit y = 2x + 1 on every backend and time it")
    demo.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    demo.add_argument("--steps", type=int, default=1000, help="full-batch steps (default 1000)")
    commands.add_parser("config", help="print versions, backends, OpenMP and threads")
    bench = commands.add_parser(
        "bench",
        help="benchmark the backends against NumPy (and scikit-learn, PyTorch)",
        description="Time every backend (and scikit-learn / PyTorch where installed) on the "
        "same data, check the results agree, print a table, write JSON and a chart.",
    )
    from .bench.cli import add_arguments

    add_arguments(bench)
    from .cli import add_commands

    add_commands(commands)  # train, predict
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run

        run(lr=args.lr, steps=args.steps)
    elif args.command == "config":
        from .sysinfo import show_config

        show_config()
    elif args.command == "bench":
        from .bench.cli import run

        return run(args)
    elif args.command in ("train", "predict"):
        from .cli import run

        return run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
