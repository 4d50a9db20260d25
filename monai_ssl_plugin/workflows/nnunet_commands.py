"""Run nnU-Net's own command-line tools as subprocesses, with the plugin's trainers visible.

Workflows and end-to-end tests call the real ``nnUNetv2_*`` commands rather than their Python
internals, so what is exercised is exactly what a user types.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.nnunet.env import ENV_EXT_TRAINER, ext_trainer_dir
from monai_ssl_plugin.nnunet_paths import PATH_VARS


def nnunet_environment(root: str | os.PathLike, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment with nnUNet_raw / _preprocessed / _results under ``root`` and the plugin's trainers."""
    root = Path(root).resolve()
    env = dict(os.environ if base is None else base)
    for var in PATH_VARS:  # each folder named like its variable
        (root / var).mkdir(parents=True, exist_ok=True)
        env[var] = str(root / var)
    paths = [p for p in env.get(ENV_EXT_TRAINER, "").split(os.pathsep) if p]
    env[ENV_EXT_TRAINER] = os.pathsep.join([ext_trainer_dir()] + [p for p in paths if p != ext_trainer_dir()])
    return env


def run_nnunet(args: Sequence[str], env: Mapping[str, str], log_file: str | os.PathLike | None = None,
               echo: bool = False) -> str:
    """Run an ``nnUNetv2_*`` command; return its output, raise a one-line PluginError on failure.

    The executable is looked up next to the running Python first, so a virtual environment's
    nnU-Net is used even when it is not on PATH.
    """
    exe = Path(sys.executable).parent / args[0]
    cmd = [str(exe) if exe.exists() else (shutil.which(args[0]) or args[0]), *map(str, args[1:])]
    proc = subprocess.run(cmd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{proc.stdout}\n")
    if echo:
        print(proc.stdout)
    if proc.returncode != 0:
        tail = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()][-1:] or ["(no output)"]
        where = f" Full output: {log_file}." if log_file else ""
        raise PluginError(f"{args[0]} failed (exit {proc.returncode}): {tail[0]}.{where}",
                          "Read the output above; most often a path or dataset id is wrong.")
    return proc.stdout
