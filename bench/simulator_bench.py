"""The whole `crm simulate --out` process: events per second and peak memory.

    python bench/simulator_bench.py --visitors 20000 --days 30 --repeat 3
    python bench/simulator_bench.py --visitors 20000 --days 30 --repeat 3 --in-memory

Each run is a fresh process under `/usr/bin/time -v` (wall clock and maximum resident set
size, as a user would measure it): interpreter start, imports, generation, JSONL and the
truth's parquet files. `--in-memory` alternates each run with one of the same size through
`simulate()` (the whole run in memory, then written), so both sides see the same machine.
Prints every run, then the median and the worst.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IN_MEMORY = """
import sys
from pathlib import Path
from simulator import SimConfig, simulate
from simulator.output import write_jsonl
from simulator.truth import truth_dir_for, write_truth_files
cfg = SimConfig(visitors=int(sys.argv[1]), days=int(sys.argv[2]), seed=int(sys.argv[3]))
out = Path(sys.argv[4])
sim = simulate(cfg)
write_jsonl(sim.lines, out)
write_truth_files(sim.truth, truth_dir_for(out), cfg)
"""


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of a command run under /usr/bin/time -v."""
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=REPO, capture_output=True,
                          text=True, check=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if wall is None or rss is None:
        raise RuntimeError(f"no timing in the output of {cmd}:\n{done.stderr[-2000:]}")
    h, m, s = wall.groups()
    return int(h or 0) * 3600 + int(m) * 60 + float(s), int(rss.group(1)) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--visitors", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk-visitors", type=int, default=None,
                    help="passed to crm simulate (default: its own)")
    ap.add_argument("--in-memory", action="store_true",
                    help="alternate with the in-memory simulate() path")
    args = ap.parse_args()
    crm = str(Path(sys.executable).with_name("crm"))
    runs: dict[str, list[tuple[float, float]]] = {"crm simulate": [], "in memory": []}
    with tempfile.TemporaryDirectory(dir=REPO / "bench") as tmp:
        out = Path(tmp) / "events.jsonl"
        size = [str(args.visitors), str(args.days), str(args.seed)]
        stream_cmd = [crm, "simulate", "--visitors", size[0], "--days", size[1],
                      "--seed", size[2], "--out", str(out)]
        if args.chunk_visitors:
            stream_cmd += ["--chunk-visitors", str(args.chunk_visitors)]
        for i in range(args.repeat):
            sides = [("crm simulate", stream_cmd)]
            if args.in_memory:
                sides.append(("in memory", [sys.executable, "-c", IN_MEMORY, *size, str(out)]))
            if i % 2:
                sides.reverse()
            for name, cmd in sides:
                wall, rss = timed(cmd)
                with out.open("rb") as fh:
                    n = sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 24), b""))
                runs[name].append((n / wall, rss))
                print(f"{name}: {n:,} events in {wall:.1f} s whole process, "
                      f"{n / wall:,.0f} events/s, peak RSS {rss:,.0f} MB "
                      f"({out.stat().st_size / n:.0f} bytes/event)", flush=True)
    for name, rs in runs.items():
        if rs:
            rates, peaks = [r for r, _ in rs], [p for _, p in rs]
            print(f"{name}: median {statistics.median(rates):,.0f} events/s "
                  f"(worst {min(rates):,.0f}); peak RSS median {statistics.median(peaks):,.0f} MB "
                  f"(worst {max(peaks):,.0f})")


if __name__ == "__main__":
    main()
