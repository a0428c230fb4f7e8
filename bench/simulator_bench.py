"""Events per second of the simulator, end to end: generate, serialise, write JSONL + truth.

    python bench/simulator_bench.py --visitors 10500 --days 30 --repeat 3

10,500 visitors over 30 days is about one million events. Prints the best of the repeats
(the machine is shared, so the best run is the least disturbed one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator import SimConfig, simulate
from simulator.output import write_jsonl
from simulator.truth import truth_dir_for, write_truth_files


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--visitors", type=int, default=10_500)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cfg = SimConfig(visitors=args.visitors, days=args.days, seed=args.seed)
    best = None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "events.jsonl"
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            sim = simulate(cfg)
            t1 = time.perf_counter()
            write_jsonl(sim.lines, out)
            write_truth_files(sim.truth, truth_dir_for(out), cfg)
            t2 = time.perf_counter()
            n = len(sim.lines)
            print(f"{n:,} events: simulate {t1 - t0:.2f} s, write {t2 - t1:.2f} s, "
                  f"{n / (t2 - t0):,.0f} events/s")
            best = max(best or 0, n / (t2 - t0))
        size = out.stat().st_size
    print(f"best: {best:,.0f} events/s end to end ({size / n:.0f} bytes/event)")


if __name__ == "__main__":
    main()
