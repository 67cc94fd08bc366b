"""Run every ``benchmarks/bench_*.py`` script in turn (each with its defaults); exit 1 if any
misses its target.

    .venv/bin/python benchmarks/run_all.py [--only rank serve ...] [--skip dask ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help="run only these (bench_NAME.py), e.g. --only rank serve")
    parser.add_argument("--skip", nargs="+", metavar="NAME", default=[],
                        help="leave these out, e.g. --skip dask (the longest)")
    args = parser.parse_args(argv)
    scripts = {s.stem.removeprefix("bench_"): s
               for s in sorted(Path(__file__).parent.glob("bench_*.py"))}
    unknown = sorted((set(args.only or []) | set(args.skip)) - set(scripts))
    if unknown:
        parser.error(f"no benchmark {unknown[0]!r}; there are: {', '.join(scripts)}")
    chosen = [s for name, s in scripts.items()
              if (args.only is None or name in args.only) and name not in args.skip]
    failed = []
    for script in chosen:
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)]).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"missed targets: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
