"""`porting record`: re-record fairseq's reference runs on the shipped example models."""
from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(p) -> None:
    from parity import shipped
    from parity.record import RUNS

    p.add_argument("--out", type=Path, default=shipped.RUNS if shipped.in_checkout() else None,
                   help="where the runs go (default: the checkout's reference_runs/runs; required outside a checkout)")
    p.add_argument("--runs", default=",".join(r.name for r in RUNS),
                   help="comma-separated subset of: %(default)s")
    p.add_argument("--limit", type=int, default=None, help="record only the first N test lines")
    p.add_argument("--force", action="store_true", help="re-record into an existing directory (its other runs are kept)")


def run(args) -> int:
    from parity.record import RUNS, record_runs

    wanted = [r for r in RUNS if r.name in args.runs.split(",")]
    unknown = set(args.runs.split(",")) - {r.name for r in RUNS}
    if unknown:
        print(f"error: unknown runs: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if args.out is None:
        print("error: give --out: this is an installed copy, not a checkout, and its runs are not shipped", file=sys.stderr)
        return 2
    if args.out.exists() and not args.force:
        print(f"error: {args.out} exists; pass --force to replace it", file=sys.stderr)
        return 2
    record_runs(wanted, args.out, args.limit)
    print(f"recorded {len(wanted)} runs into {args.out}")
    return 0
