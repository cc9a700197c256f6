"""`cohort demo`: the main job on its embedded default."""

from __future__ import annotations

import argparse
import inspect

NAME = "demo"
HELP = "run the main job on its embedded default: local folder, synthetic cohort"


def add_parser(sub) -> None:
    from cohort.demo import run_demo

    d = {k: v.default for k, v in inspect.signature(run_demo).parameters.items()}
    demo = sub.add_parser(
        "demo", help="run the main job on its embedded default: local folder, synthetic cohort",
        description="Run the main job on its embedded default (a local folder, a synthetic "
                    "cohort) and print where the results are with a short summary.")
    demo.add_argument("--out", default=d["out_dir"], metavar="DIR",
                      help="folder for the demo's results; an earlier demo's cohort, index and "
                           "results there are replaced (default: ./%(default)s)")
    demo.add_argument("--patients", type=int, default=d["patients"],
                      help="synthetic patients (default %(default)s)")
    demo.add_argument("--seed", type=int, default=d["seed"], help="random seed (default "
                                                                 "%(default)s)")
    demo.add_argument("--matrix", type=int, default=d["matrix"],
                      help="pixels per row (default %(default)s)")
    demo.add_argument("--workers", type=int, default=d["workers"],
                      help="processes (default %(default)s: one per CPU)")
    demo.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> str:
    from cohort.demo import run_demo

    return run_demo(out_dir=args.out, patients=args.patients, seed=args.seed,
                    matrix=args.matrix, workers=args.workers)
