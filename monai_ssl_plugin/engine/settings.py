"""A run's settings checked before anything is created, and every refusal as one line.

``python -m monai.bundle run`` hands command-line overrides straight to MONAI's config parser: a
misspelt id becomes a new, unused entry, ``--batch_size two`` fails deep inside the first step,
and a plugin refusal arrives wrapped in two tracebacks. The pretraining bundles therefore call
:func:`start_run` first thing (their ``initialize`` list), which

1. installs :func:`excepthook`, so an uncaught failure whose cause is a
   :class:`~monai_ssl_plugin.errors.PluginError` (or a full / read-only disk) ends with the plugin's
   one line (``monai-ssl: error: ...``) as the run's final line, whatever MONAI printed above it;
2. notes what ``output_dir`` holds (every file, and the bytes of the small ones), so a run that fails
   before its first checkpoint removes what it created (``tensorboard/`` or a new event file in a
   resumed run's ``tensorboard/``, ``timing.csv``, ``bad_data.tsv``, ...) and puts back the small files it
   changed (a resumed run's ``timing.csv``): it leaves nothing behind;
3. under ``python -m monai.bundle run``, reads the overrides from the command line and checks
   them with :func:`check_overrides`: unknown ids, types and ranges.

``monai-ssl pretrain`` runs the same checks on its keyword overrides before starting MONAI.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fire.parser import DefaultParseValue
from monai.bundle import ConfigParser

from monai_ssl_plugin.data.guard import BAD_DATA_POLICIES
from monai_ssl_plugin.engine.config_values import as_bool, auto_device
from monai_ssl_plugin.engine.handlers.checkpoint import resume_mode
from monai_ssl_plugin.engine.schedules import SCHEDULES
from monai_ssl_plugin.errors import PluginError, plugin_error_in

logger = logging.getLogger(__name__)

# monai.bundle run's own arguments: never config ids
RUN_ARGUMENTS = {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file"}
_START: dict[str, Any] | None = None
_PREVIOUS_HOOK = sys.excepthook


# -- checks, one per kind of value ----------------------------------------------------------------
def _int(low: int) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PluginError(f"--{name} {value!r} is not a whole number.", f"Pass e.g. --{name} {max(low, 2)}.")
        if value < low:
            raise PluginError(f"--{name} {value} is below {low}.", f"Pass a whole number >= {low}.")
    return check


def _float(low: float, high: float | None = None, low_open: bool = True, high_open: bool = True
           ) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PluginError(f"--{name} {value!r} is not a number.", "Pass a number, e.g. 0.01 or 1e-3.")
        below = value <= low if low_open else value < low
        above = high is not None and (value >= high if high_open else value > high)
        if below or above or value != value:
            span = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}{')' if high_open else ']'}"
            raise PluginError(f"--{name} {value} is outside {span}.", f"Pass a value in {span}.")
    return check


def _choice(options: Iterable[str]) -> Callable[[str, Any], None]:
    options = tuple(options)

    def check(name: str, value: Any) -> None:
        if str(value).strip().lower() not in options:
            raise PluginError(f"--{name} {value!r} is not one of {', '.join(options)}.", f"Pass one of {', '.join(options)}.")
    return check


def _patch(name: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise PluginError(f"--{name} {value!r} is not a list of sizes.", f'Pass one size per axis, e.g. --{name} "[64,64,64]".')
    if not 2 <= len(value) <= 3 or min(value) < 1:
        raise PluginError(f"--{name} {list(value)} needs 2 or 3 positive sizes.", f'Pass e.g. --{name} "[64,64,64]".')


def _steps(name: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                       for v in value):
        raise PluginError(f"--{name} {value!r} is not a list of iteration counts.", f'Pass e.g. --{name} "[0,100,300]".')


def _flag(name: str, value: Any) -> None:
    try:
        as_bool(value)
    except PluginError:
        raise PluginError(f"--{name} {value!r} is not true or false.", f"Pass --{name} true or --{name} false.") from None


def _device(name: str, value: Any) -> None:
    try:
        auto_device(str(value))
    except RuntimeError as e:  # torch's own message for a malformed device string
        if isinstance(e, PluginError):
            raise
        raise PluginError(f"--{name} {value!r} is not a device.", "Pass cpu, cuda, cuda:1 or auto.") from None


def _resume(name: str, value: Any) -> None:
    resume_mode(value)


def _bad_data(name: str, value: Any) -> None:
    _choice(BAD_DATA_POLICIES)(name, value)


def _schedule(name: str, value: Any) -> None:
    _choice(SCHEDULES)(name, value)


SETTINGS: dict[str, Callable[[str, Any], None]] = {
    "batch_size": _int(1), "seed": _int(0), "save_every_n_iters": _int(0),
    "train#epoch_length": _int(1), "train#trainer#max_epochs": _int(1), "train#num_workers": _int(0),
    "learning_rate": _float(0.0), "mask_ratio": _float(0.0, 1.0), "grad_clip": _float(0.0),
    "warmup_fraction": _float(0.0, 1.0, low_open=False), "patch_size": _patch, "device": _device,
    "resume": _resume, "bad_data": _bad_data, "lr_schedule": _schedule, "amp_dtype": _choice(("bfloat16", "float16")),
    "keep_steps": _steps, "payoff_every": _int(1), "payoff_cases": _int(1), "payoff_score_cases": _int(1),
    **{flag: _flag for flag in ("amp", "quiet", "deterministic", "activation_checkpointing", "channels_last",
                                "torch_compile")},
}


def check_overrides(overrides: dict[str, Any], config_ids: Callable[[str], bool] | None = None) -> None:
    """Refuse an override of an id the config lacks (when ``config_ids`` tells which exist) or a
    value of the wrong type or range (:data:`SETTINGS`); expressions (``$``, ``@``, ``%``) pass."""
    ids = {str(k).replace("::", "#"): v for k, v in overrides.items()}
    if config_ids is not None:
        unknown = sorted(k for k in ids if not config_ids(k))
        if unknown:
            raise PluginError(f"The bundle has no config id {', '.join(repr(k) for k in unknown)}.",
                              "Check the spelling; nested ids use '#', e.g. train#epoch_length or train#trainer#max_epochs.")
    for key, value in ids.items():
        if key in SETTINGS and value is not None and not (isinstance(value, str) and value.strip()[:1] in "$@%"):
            SETTINGS[key](key, value)


# -- the command line of `python -m monai.bundle run` ---------------------------------------------
def bundle_run_command_line(argv: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(run arguments, overrides)`` of this process when it is ``python -m monai.bundle run``, else ``None``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if argv is None and getattr(spec, "name", None) != "monai.bundle.__main__":
        return None
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "run":
        return None
    args, values = args[1:], {}
    if args and not args[0].startswith("--"):
        values["run_id"], args = args[0], args[1:]
    while args:
        token, args = args[0], args[1:]
        if not token.startswith("--"):
            continue
        key, eq, text = token[2:].partition("=")
        if not eq:
            text, args = (args[0], args[1:]) if args and not args[0].startswith("--") else ("True", args)
        values[key.replace("-", "_") if key in ("config-file", "meta-file") else key] = DefaultParseValue(text)
    run_args = {k: v for k, v in values.items() if k in RUN_ARGUMENTS}
    return run_args, {k: v for k, v in values.items() if k not in RUN_ARGUMENTS}


def _config_ids(config_file: Any) -> Callable[[str], bool]:
    parser = ConfigParser()
    parser.read_config(config_file)
    return lambda key: key in parser


# -- start, failure, end ------------------------------------------------------------------------
def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    """Clean a failed start, then print the plugin's one line (or the usual traceback for anything else)."""
    clean_failed_start()
    error = plugin_error_in(value)
    if error is None:
        _PREVIOUS_HOOK(kind, value, tb)
        return
    sys.stderr.flush()
    print(f"monai-ssl: error: {error}", file=sys.stderr, flush=True)


def start_run(output_dir: str | Path) -> None:
    """The bundles' first ``initialize`` step (see the module docstring)."""
    global _START
    sys.excepthook = excepthook
    out = Path(output_dir).expanduser().absolute()
    _START = {"output_dir": out, "existed": out.exists(), "time": time.time(), **_snapshot(out)}
    command = bundle_run_command_line()
    if command is not None:
        run_args, overrides = command
        if "args_file" in run_args:
            overrides = {**ConfigParser.load_config_file(run_args["args_file"]), **overrides}
            run_args = {**{k: v for k, v in overrides.items() if k in RUN_ARGUMENTS}, **run_args}
            overrides = {k: v for k, v in overrides.items() if k not in RUN_ARGUMENTS}
        config_ids = _config_ids(run_args["config_file"]) if "config_file" in run_args else None
        check_overrides(overrides, config_ids)


def end_run() -> None:
    """The bundles' last ``run`` step: the run succeeded, nothing is to be cleaned."""
    global _START
    _START = None


def _checkpoint_written(start: dict[str, Any]) -> bool:
    folder = start["output_dir"] / "checkpoints"
    return folder.is_dir() and any(p.stat().st_mtime >= start["time"] for p in folder.glob("*.pt"))


# The bytes of files up to this size are kept at the start, so a failed resumed run can put back what it
# changed (timing.csv, payoff.csv, bad_data.tsv); checkpoints are never rewritten by a failed start.
_KEEP_BYTES = 4 << 20


def _snapshot(out: Path) -> dict[str, Any]:
    """Every path under ``out`` (relative) and the bytes of its small files outside ``checkpoints/``."""
    paths: set[str] = set()
    saved: dict[str, bytes] = {}
    if out.is_dir():
        for path in out.rglob("*"):
            rel = path.relative_to(out).as_posix()
            paths.add(rel)
            if (path.is_file() and not path.is_symlink() and rel.split("/")[0] != "checkpoints"
                    and path.stat().st_size <= _KEEP_BYTES):
                saved[rel] = path.read_bytes()
    return {"paths": paths, "saved": saved}


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def clean_failed_start() -> list[Path]:
    """After a failure before the first checkpoint: remove what the run created in ``output_dir``
    (the folder itself when the run created it) and restore the small files it changed. A run
    that wrote a checkpoint keeps everything."""
    global _START
    start, _START = _START, None
    if start is None or _checkpoint_written(start) or not start["output_dir"].is_dir():
        return []
    out = start["output_dir"]
    new = {p for p in out.rglob("*") if p.relative_to(out).as_posix() not in start["paths"]}
    created = sorted(p for p in new if new.isdisjoint(p.parents))  # the outermost new paths
    for path in created:
        _remove(path)
    for rel, data in start["saved"].items():
        path = out / rel
        if path.is_file() and path.read_bytes() != data:
            path.write_bytes(data)
            created.append(path)
    if not start["existed"] and not any(out.iterdir()):
        out.rmdir()
        created.append(out)
    if created:
        logger.info("The run failed before its first checkpoint: removed or restored %s.",
                    ", ".join(p.relative_to(out).as_posix() if p != out else p.name for p in created))
    return created
