"""Bad-data policy: a source wrapper that validates every loaded volume and skips or refuses bad cases.

Bad kinds (:func:`volume_problem`): unreadable / corrupt file (the source's load raises), NaN or
infinite voxels, empty volume (a zero-length axis), constant volume (a channel without signal),
wrong dimensionality (not ``C + spatial_dims`` axes, or a spatial axis of size 1 where the patch
needs more, i.e. a 2D slice in a 3D dataset). Volumes merely smaller than the patch are
*handled*: :class:`~monai_ssl_plugin.data.dataset.RandomPatchDataset` zero-pads them (counted as
``padded``, not as bad).

Policy (``bad_data`` in the bundles):

- ``"skip"``: the case is replaced by the next good case (deterministically: ``i+1, i+2, ...``), a
  warning names the case and the reason once, and the skip is counted; :meth:`GuardedSource.summary`
  (logged at the end of the run when the guard is in ``train#handlers``) gives the count. With
  loader workers each process counts its own skips; ``log_file`` (one ``case<TAB>reason`` line per
  distinct bad case and process) gathers them for the end-of-run count.
- ``"raise"``: the first bad case met stops the run with a one-line :class:`PluginError`.
- ``"refuse"``: every case is loaded and checked when the guard is built (before the first step),
  and one :class:`PluginError` lists the bad cases; a clean dataset then trains as under ``raise``.

``monai-ssl check-data`` (:func:`monai_ssl_plugin.data.sources.check_data`) is the up-front check:
it reports the same problems for every case before a run starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Events

from monai_ssl_plugin.data.sources import (
    NIFTI_ENDINGS,
    UnlabelledSource,
    VolumeDefect,
    nifti_problem,
    nonfinite_reason,
    nonfinite_voxels,
    open_source,
)
from monai_ssl_plugin.errors import PluginError

logger = logging.getLogger(__name__)

BAD_DATA_POLICIES = ("skip", "raise", "refuse")
PADDED = "padded "  # log_file reason prefix of a case smaller than the patch (not bad)


def volume_problem(volume: Any, spatial_dims: int | None = None, patch_size: Sequence[int] | None = None,
                   in_channels: int | None = None) -> str | None:
    """Why a loaded ``(C, *spatial)`` volume cannot be trained on, or ``None`` when it is usable.

    A spatial axis of size 1 (a 2D slice in 3D data) is wrong unless the patch is 1 along it too;
    ``in_channels`` (the dataset's) catches a 4D file whose 4th axis became extra channels.
    """
    vol = np.asarray(volume)
    if spatial_dims is not None and vol.ndim != int(spatial_dims) + 1:
        return f"wrong dimensionality: shape {list(vol.shape)}, expected (channels + {spatial_dims} spatial axes)"
    if vol.size == 0 or vol.ndim < 2:
        return f"empty volume (shape {list(vol.shape)})"
    patch = list(patch_size) if patch_size is not None else [None] * (vol.ndim - 1)
    flat = [i for i, (s, p) in enumerate(zip(vol.shape[1:], patch)) if s == 1 and (p is None or int(p) > 1)]
    if flat and (patch_size is not None or vol.ndim > 3):
        return f"wrong dimensionality: spatial axis {flat[0]} has size 1 (shape {list(vol.shape)}; a 2D image in 3D data?)"
    if in_channels is not None and vol.shape[0] != int(in_channels):
        return (f"wrong channel count: {vol.shape[0]} channel(s) (a 4D file?), the dataset has {in_channels} "
                f"(shape {list(vol.shape)})")
    finite = np.isfinite(vol)
    if not finite.all():
        return nonfinite_reason(int(vol.size - np.count_nonzero(finite)))
    for c in range(vol.shape[0]):
        if float(vol[c].max()) == float(vol[c].min()):
            return "a channel is constant (no signal)"
    return None


def case_problem(source: UnlabelledSource, i: int, patch_size: Sequence[int] | None = None
                 ) -> tuple[np.ndarray | None, str | None]:
    """Load case ``i`` and judge it: ``(volume, None)`` when usable, ``(None, reason)`` when not.

    The one check behind the run (:class:`GuardedSource`) and ``check-data`` (:func:`check_source`),
    so both name the same cases for the same reasons.
    """
    try:
        vol = source.load(i)
    except VolumeDefect as e:
        return None, e.reason
    except Exception as e:  # PluginError from the readers, or anything a custom source raises
        text = getattr(e, "problem", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
        return None, f"unreadable ({text[:200]})"
    problem = volume_problem(vol, source.info.get("spatial_dims"), patch_size, source.info.get("in_channels"))
    return (None, problem) if problem else (vol, None)


def smaller_than(volume: np.ndarray, patch_size: Sequence[int] | None) -> bool:
    return patch_size is not None and any(s < int(p) for s, p in zip(volume.shape[1:], patch_size))


class GuardedSource(UnlabelledSource):
    """An :class:`UnlabelledSource` whose ``load`` validates each volume and applies the policy.

    Args:
        source: the wrapped source.
        policy: ``"skip"``, ``"raise"`` or ``"refuse"`` (see the module docstring).
        patch_size: to recognise flat (2D-in-3D) volumes and count the ones that will be padded.
        log_file: optional file gathering the distinct skipped cases across loader processes.
    """

    def __init__(self, source: UnlabelledSource, policy: str = "skip", patch_size: Sequence[int] | None = None,
                 log_file: str | os.PathLike | None = None):
        policy = str(policy).strip().lower()
        if policy not in BAD_DATA_POLICIES:
            raise PluginError(f"bad_data={policy!r} is not a policy.", f"Use one of {BAD_DATA_POLICIES}.")
        self.source = source
        self.policy = policy
        self.patch_size = None if patch_size is None else [int(p) for p in patch_size]
        self.log_file = None if log_file in (None, "", "null") else Path(log_file)
        self.case_ids = list(source.case_ids)
        self.info = source.info
        self.bad: dict[str, str] = {}  # case id -> reason (this process)
        self.padded: dict[str, list[int]] = {}  # case id -> spatial shape, for cases smaller than the patch
        self._good: set[int] = set()
        if policy == "refuse":
            self._refuse_up_front()

    def __repr__(self) -> str:
        return f"GuardedSource({self.source!r}, policy={self.policy!r})"

    def _check(self, i: int) -> tuple[np.ndarray | None, str | None]:
        return case_problem(self.source, i, self.patch_size)

    def _refuse_up_front(self) -> None:
        """Load every case once; one error naming the bad ones (the ``refuse`` policy)."""
        bad = []
        for i, case in enumerate(self.case_ids):
            vol, problem = self._check(i)
            if problem is not None:
                bad.append(f"{case}: {problem}")
            else:
                self._good.add(i)
        if bad:
            shown = "; ".join(bad[:5]) + ("; ..." if len(bad) > 5 else "")
            raise PluginError(f"{len(bad)} of {len(self.case_ids)} case(s) are unusable ({shown}).",
                              "Fix or remove them (`monai-ssl check-data PATH` lists every problem), "
                              "or set bad_data: skip to train on the good cases.")
        logger.info("bad data: all %d case(s) checked up front, none unusable.", len(self.case_ids))

    def _record(self, i: int, reason: str) -> None:
        case = self.case_ids[i]
        if case in self.bad:
            return
        self.bad[case] = reason
        logger.warning("Skipping case %s: %s (%d bad case(s) skipped so far in this process).", case, reason,
                       len(self.bad))
        self._append_log(case, reason)

    def _append_log(self, case: str, reason: str) -> None:
        if self.log_file is None:
            return
        try:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "a") as f:  # one short O_APPEND write per case
                f.write(f"{case}\t{reason}\n")
        except OSError as e:
            logger.warning("Cannot append to %s (%s).", self.log_file, e)

    def _logged(self) -> list[tuple[str, str]]:
        if self.log_file is None or not self.log_file.is_file():
            return []
        return [(c, r) for c, _, r in (line.partition("\t") for line in self.log_file.read_text().splitlines())]

    def load(self, i: int) -> np.ndarray:
        n = len(self.case_ids)
        for step in range(n):
            j = (i + step) % n
            if self.case_ids[j] in self.bad:
                continue
            vol, problem = self._check(j)
            if problem is None:
                self._good.add(j)
                if smaller_than(vol, self.patch_size) and self.case_ids[j] not in self.padded:
                    self.padded[self.case_ids[j]] = list(vol.shape[1:])
                    logger.info("Case %s %s is smaller than the patch %s: zero-padded.", self.case_ids[j],
                                list(vol.shape[1:]), self.patch_size)
                    self._append_log(self.case_ids[j], f"{PADDED}{list(vol.shape[1:])}")
                return vol
            if self.policy in ("raise", "refuse"):
                raise PluginError(f"Bad case {self.case_ids[j]}: {problem}.",
                                  "Fix or remove it (`monai-ssl check-data PATH` lists every problem), "
                                  "or set bad_data: skip to skip bad cases.")
            self._record(j, problem)
        raise PluginError(f"Every case of {self.source!r} is unusable ({len(self.bad)} bad).",
                          "Run `monai-ssl check-data PATH` and fix the data.")

    # -- reporting -----------------------------------------------------------------------------
    def skipped(self) -> dict[str, str]:
        """Distinct skipped cases (this process plus the ``log_file`` of all loader processes)."""
        out = dict(self.bad)
        for case, reason in self._logged():
            if not reason.startswith(PADDED):
                out.setdefault(case, reason)
        return out

    def padded_cases(self) -> dict[str, str]:
        """Distinct cases smaller than the patch, zero-padded (all loader processes): case -> shape."""
        out = {c: str(s) for c, s in self.padded.items()}
        for case, reason in self._logged():
            if reason.startswith(PADDED):
                out.setdefault(case, reason[len(PADDED):])
        return out

    def summary(self) -> str:
        skipped = self.skipped()
        text = f"bad data: {len(skipped)} case(s) skipped of {len(self.case_ids)}"
        if skipped:
            text += " (" + "; ".join(f"{c}: {r}" for c, r in sorted(skipped.items())[:10])
            text += ", ...)" if len(skipped) > 10 else ")"
        padded = self.padded_cases()
        text += f", {len(padded)} padded"
        if padded:
            text += " (" + "; ".join(f"{c}: {s} < patch {self.patch_size}" for c, s in sorted(padded.items())[:10]) + ")"
        return text + f" (policy {self.policy})"

    def attach(self, engine: Any) -> None:
        """As an ignite handler: log :meth:`summary` when the run completes."""
        engine.add_event_handler(Events.COMPLETED, lambda _: logger.info("%s.", self.summary()))


# -- the up-front check: `monai-ssl check-data` ---------------------------------------------
def check_data(path: str | int | os.PathLike, configuration: str = "3d_fullres",
               plans_identifier: str = "nnUNetPlans", *, plans: str | os.PathLike | None = None,
               include_test: bool = True) -> list[str]:
    """Every problem with the data at ``path``; empty when all good (what ``monai-ssl check-data`` prints).

    First every NIfTI file under the folder is checked for damage (header, truncation), so one bad
    file cannot hide the others; then the source is opened and every case loaded (:func:`check_source`).
    """
    p = Path(os.fspath(path) if not isinstance(path, int) else str(path)).expanduser()
    problems, bad_files = [], set()
    if p.is_dir() and not (p / f"{plans_identifier}.json").is_file():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(NIFTI_ENDINGS)
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
        for f in files:
            msg = nifti_problem(f) or (nonfinite_reason(n) if (n := nonfinite_voxels(f)) else None)
            if msg:
                problems.append(f"{f}: {msg}")
                bad_files.add(f)
    try:
        source = open_source(path, configuration, plans_identifier, plans=plans, include_test=include_test)
    except PluginError as e:
        return problems + [str(e)]
    cases = getattr(source, "cases", None)
    skip = {c for c, fs in zip(source.case_ids, cases or []) if bad_files.intersection(fs)}
    return problems + check_source(source, skip=skip)


def check_source(source: UnlabelledSource, patch_size: Sequence[int] | None = None,
                 skip: set[str] | None = None) -> list[str]:
    """Load every case (but those in ``skip``) and list the problems with the run's own check
    (:func:`monai_ssl_plugin.data.guard.case_problem`); empty when all good."""
    problems = []
    for i, case in enumerate(source.case_ids):
        if case in (skip or ()):
            continue
        _, problem = case_problem(source, i, patch_size)
        if problem:
            problems.append(f"{case}: {problem}")
    return problems
