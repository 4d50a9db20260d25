"""What the benchmark scripts share, so that each script holds only what it measures.

The scripts are run from a checkout (``python benchmarks/bench_X.py``), so this folder is on
``sys.path`` and they import this module by its bare name. It imports no torch at module level:
some scripts set thread and OpenMP variables before torch starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "RESULT "  # the line a child process prints its measurement on


def use_checkout() -> None:
    """Put the checkout first on ``sys.path``: the scripts measure this tree, not an installed copy."""
    sys.path.insert(0, str(ROOT))


def check_device(name: str, fix: str) -> torch.device:
    """The device to run on; a CUDA device without a GPU is refused in one line naming ``fix``."""
    import torch

    from monai_ssl_plugin.errors import PluginError

    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PluginError(f"--device {name} was asked for, but torch sees no CUDA GPU on this machine.", fix)
    return device


def run_cli(main: Callable[[], int | None]) -> NoReturn:
    """Exit with ``main()``'s status; a ``PluginError`` becomes one line on stderr and exit status 2."""
    from monai_ssl_plugin.errors import PluginError

    try:
        raise SystemExit(main())
    except PluginError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def select(names: Iterable[str], only: str) -> list[str]:
    """``names`` that contain one of the comma-separated substrings of ``only`` (all when it is empty)."""
    wanted = [w for w in only.split(",") if w]
    return [n for n in names if not wanted or any(w in n for w in wanted)]


def interleaved_ms(fns: list[Callable[[], object]], repeats: int, sync: Callable[[], None] = lambda: None
                   ) -> tuple[list[list[float]], list[list[float]]]:
    """Wall and CPU times in ms of ``repeats`` calls of each function, after one warm-up call each.

    The functions run interleaved (a, b, a, b, ...) so that all of them see the same machine load;
    ``sync`` waits for queued device work (CUDA) before a clock is read. The CPU time (this
    process, all threads) is what a call costs a dedicated core: waits for a core do not stretch it.
    """
    for fn in fns:
        fn()
    sync()
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, record, record_cpu in zip(fns, wall, cpu):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            record.append((time.perf_counter() - start) * 1e3)
            record_cpu.append((time.process_time() - start_cpu) * 1e3)
    return wall, cpu


def rss_mb() -> float:
    """This process's resident set size in MiB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def print_result(result: dict[str, Any]) -> None:
    """The child side of :func:`child_result`: one line the parent finds among any other output."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def child_result(cmd: list[str], **run: Any) -> tuple[dict[str, Any] | None, subprocess.CompletedProcess]:
    """Run one measurement in a fresh process (its own allocator and thread state); its result or None.

    None when the child failed or printed no result line; the finished process comes back for its output.
    """
    proc = subprocess.run(cmd, capture_output=True, text=True, **run)
    lines = [x for x in proc.stdout.splitlines() if x.startswith(RESULT_PREFIX)]
    if proc.returncode or not lines:
        return None, proc
    return json.loads(lines[-1][len(RESULT_PREFIX):]), proc


def add_child_args(parser: argparse.ArgumentParser) -> None:
    """The hidden flags a script passes to its own child process: measure one case (``--one``) on
    the dataset the parent wrote (``--dataset``), working in the parent's folder (``--work``)."""
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
