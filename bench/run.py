"""`make bench`: runs every benchmark in bench/ and writes bench/results.json.

Each bench_*.py module has `run(workdir: Path) -> dict[str, object]`; their results are merged, with
the machine they ran on, into one JSON file that docs/PERFORMANCE.md quotes. `bench/run.py bench_x …` runs
only those and updates their figures in the file.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> int:
    only = set(sys.argv[1:])
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    # A run of some benchmarks only updates their figures, and says when under its own key, so `when` stays
    # the time of the whole run the other figures came from.
    results: dict[str, object] = {
        **({f"when_{name}": now for name in sorted(only)} if only else {"when": now}),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    for path in sorted(HERE.glob("bench_*.py")):
        if only and path.stem not in only:
            continue
        module = importlib.import_module(f"bench.{path.stem}")
        print(f"== {path.stem}", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"{path.stem}-") as workdir:
            measured = module.run(Path(workdir))
        for key, value in measured.items():
            print(f"   {key}: {value}", flush=True)
        results.update(measured)
    out = HERE / "results.json"
    previous = json.loads(out.read_text()) if out.exists() and only else {}
    previous.update(results)
    out.write_text(json.dumps(previous, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
