"""``make bench``: run every ``bench_*.py`` here (or the ones named) in one run, against one Redis.

Each benchmark prints its own lines; comparisons are ratios measured side by
side in the same run, so that a noisy machine moves both sides alike.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(names: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django

    django.setup()
    available = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    chosen = names or available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available}", file=sys.stderr)
        return 2
    print(
        f"django-stability benchmarks, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores"
    )
    for name in chosen:
        started = time.monotonic()
        importlib.import_module(f"benchmarks.bench_{name}").main()
        print(f"  ({name}: {time.monotonic() - started:.1f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
