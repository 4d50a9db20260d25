"""The pay-off curve: SSL - scratch against pretraining steps and labelled cases, per pretext.

    python benchmarks/bench_payoff_curve.py --config benchmarks/payoff_curve.yaml \
        --steps 0 100 300 800 --output_dir runs/payoff_curve

Writes ``curve.json``, ``curve.md`` (the tables) and ``images/curve_<task>_{steps,labels}.png``
(see :mod:`monai_ssl_plugin.evaluation.curve`). Resumable; once the pretraining is done, more
processes on the same ``--output_dir`` share the fine-tuning cells.
"""

from __future__ import annotations

import argparse
import logging
import time

from monai_ssl_plugin.evaluation.curve import payoff_curve


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="benchmarks/payoff_curve.yaml")
    ap.add_argument("--steps", type=int, nargs="+", default=[0, 100, 300, 800])
    ap.add_argument("--output_dir", default="runs/payoff_curve")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.time()
    record = payoff_curve(args.config, args.output_dir, args.steps)
    print(open(f"{args.output_dir}/curve.md").read())
    print(f"{record['cells_done']}/{record['cells']} cells; {time.time() - t0:.0f} s this call")


if __name__ == "__main__":
    main()
