"""A small temporary file system for fault injection: full or read-only disks, for real.

``small_filesystem(path, size_kb, read_only)`` mounts a tmpfs of ``size_kb`` at ``path`` (root
with mount rights, as on the CI runners and the development machine) and skips the test where
the machine does not allow it; it is always unmounted afterwards.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, timeout=30).returncode == 0


@contextmanager
def small_filesystem(path: Path, size_kb: int = 64, read_only: bool = False) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if not _mount("-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)):
        pytest.skip("cannot mount a tmpfs on this machine")
    try:
        if read_only and not _mount("-o", "remount,ro", str(path)):
            pytest.skip("cannot remount read-only on this machine")
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(path: Path) -> None:
    """Fill the file system holding ``path`` up to the last byte."""
    with open(path / "filler", "wb", buffering=0) as f:
        for size in (4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
