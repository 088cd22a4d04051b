"""`python -m bench [--smoke] [--only B1,B3] [--out PATH]`: run the benchmarks, print one table,
write the results (every figure with its unit, the machine, library versions, the date)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
import traceback
from pathlib import Path

from bench.common import BenchResult, Config, loadavg, table, write_results
from bench.stack import Services

BENCHMARKS = {
    "B1": "bench.b1_training",
    "B2": "bench.b2_end_to_end",
    "B3": "bench.b3_predict",
    "B4": "bench.b4_queue",
    "B5": "bench.b5_scale",
    "B6": "bench.b6_memory",
    "B7": "bench.b7_sweep",
    "B8": "bench.b8_distributed",
}
DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (about a minute)")
    parser.add_argument("--only", default="", help="comma-separated ids, e.g. B1,B3")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON path")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (process logs)")
    args = parser.parse_args(argv)
    chosen = [b.strip().upper() for b in args.only.split(",") if b.strip()] or list(BENCHMARKS)
    unknown = [b for b in chosen if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    config = Config(smoke=args.smoke)
    results: list[BenchResult] = []
    began = time.perf_counter()
    # Libraries print (MLflow's run links); stdout is kept for the table.
    with Services(keep=args.keep) as services, contextlib.redirect_stdout(sys.stderr):
        print(f"work dir: {services.workdir}", file=sys.stderr)
        # Nothing boots while B1 measures: a stack starting up (imports, migrations) took
        # CPU from whichever B1 arm ran then and moved its ratio by up to 15%.
        for bench_id in (b for b in BENCHMARKS if b in chosen):
            start, load = time.perf_counter(), loadavg()
            print(f"[{time.perf_counter() - began:6.1f}s] {bench_id} ...", file=sys.stderr,
                  flush=True)
            try:
                result = importlib.import_module(BENCHMARKS[bench_id]).run(config, services)
            except Exception as error:  # one broken benchmark must not lose the others
                traceback.print_exc()
                result = BenchResult(bench_id, "failed", error=f"{type(error).__name__}: {error}")
            result.seconds = round(time.perf_counter() - start, 1)
            result.loadavg = [load, loadavg()]
            results.append(result)
            write_results(args.out, results, smoke=args.smoke,
                          extra_meta={"only": chosen, "total_seconds": 0})
    total = round(time.perf_counter() - began, 1)
    write_results(args.out, results, smoke=args.smoke,
                  extra_meta={"only": chosen, "total_seconds": total})
    print(table(results))
    print(f"\n{len(results)} benchmark(s) in {total} s; results in {args.out}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
