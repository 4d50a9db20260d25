"""The evaluation's fairness guard: comparisons that cannot be meaningful are flagged, and refused by default.

An SSL − scratch delta means something only when the two arms differ in their initialisation alone
and each arm ran the schedule it is meant to run. Two ways that fails, both checked here:

- **Unequal budgets.** Paired cells (same route, task, label budget and seed) must record the same
  fine-tuning budget and the same training cases. They can differ when a re-run reuses cells computed
  under an earlier version of the protocol (the runner keeps every finished cell), so each cached cell's
  recorded budget is also compared with the one the current protocol gives it.
- **A pretrained schedule that does not fit the budget** (nnU-Net route). The fine-tuning recipe for
  pretrained weights ramps the rate up over a warm-up (and, for the sawtooth, trains the decoder alone
  first). nnU-Net steps the rate once per epoch, so a warm-up of one epoch is no warm-up: its only
  epoch already runs at the peak (:func:`monai_ssl_plugin.nnunet.schedules.warmup_poly_lr`). The guard
  resolves the epochs exactly as the trainer does (its class numbers, the environment the route sets,
  :func:`monai_ssl_plugin.nnunet.trainers.sawtooth_lengths` when the run is shortened) and flags a
  phase the recipe asks for that gets fewer than two epochs, or a phase left with no decay epoch.

A flag names the cells it concerns (route, and optionally task, budget, pretext); the report prints
``⚠`` next to each affected number with the reason under the table.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.evaluation.protocol import SEGMENTATION_TASKS, Protocol

MIN_PHASE_EPOCHS = 2  # a ramp needs an epoch below the peak: warmup_poly_lr(0, p, n, 1) == p
SCHEDULE_TRAINERS = {"warmup_poly": "nnUNetTrainerSSL_5epochs", "sawtooth": "nnUNetTrainerSSLSawtooth_5epochs"}
SCRATCH_TRAINER = "nnUNetTrainerScratch_5epochs"
ALLOW_HINT = "or pass --allow_unfair true to run it anyway (the report marks every affected number)"


@dataclass(frozen=True)
class Flag:
    """Why some cells' SSL − scratch comparison is not meaningful. ``None`` fields match everything."""

    route: str
    reason: str
    fix: str
    task: str | None = None
    budget: int | None = None
    pretext: str | None = None

    def covers(self, route: str, task: str, budget: int, pretext: str) -> bool:
        """True for the pretrained arm's cells this flag is about (a scratch value alone is not flagged)."""
        return (route == self.route and pretext != "scratch" and self.task in (None, task)
                and self.budget in (None, budget) and self.pretext in (None, pretext))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Schedule:
    """The pretrained arm's nnU-Net schedule as the trainer resolves it (epochs; the rate steps per epoch)."""

    trainer: str
    num_epochs: int
    warmup_epochs: int
    requested_warmup: int  # what the recipe (class or protocol) asks for, before shortening
    decoder_epochs: int = 0  # sawtooth: the decoder-only tooth; 0 = no sawtooth


def resolve_schedule(trainer: str, epochs: int, warmup_epochs: int | None = None,
                     decoder_epochs: int | None = None) -> Schedule:
    """Warm-up and decoder-tooth epochs of ``trainer`` run for ``epochs`` epochs, with the explicit
    ``nnUNet_SSL_warmup_epochs`` / ``nnUNet_SSL_decoder_epochs`` when given (``None``: unset), as
    ``nnUNetTrainerSSL.__init__`` resolves them."""
    from monai_ssl_plugin.nnunet import trainers

    cls = getattr(trainers, trainer)
    num_epochs = max(1, int(epochs))
    warmup = int(cls.warmup_epochs if warmup_epochs is None else warmup_epochs)
    requested = warmup
    explicit = warmup_epochs is not None or decoder_epochs is not None
    if cls.sawtooth:
        decoder = int(cls.decoder_epochs if decoder_epochs is None else decoder_epochs)
        if num_epochs != cls.num_epochs and not explicit:
            warmup, decoder = trainers.sawtooth_lengths(num_epochs, cls.num_epochs, warmup, decoder)
        return Schedule(trainer, num_epochs, warmup, requested, decoder)
    if warmup_epochs is None and warmup > num_epochs // 2:
        warmup = num_epochs // 2 if num_epochs > 1 else 0  # a shortened run keeps a decay phase
    return Schedule(trainer, num_epochs, warmup, requested)


def _phase_problems(name: str, length: int, warmup: int, wants_warmup: bool) -> list[str]:
    """What is wrong with one warm-up + poly phase of ``length`` epochs (empty: it fits)."""
    ramp = min(warmup, length)
    problems = []
    if wants_warmup and ramp < MIN_PHASE_EPOCHS:
        problems.append(f"{name} has a {ramp}-epoch warm-up, so it starts at the peak rate (no ramp)")
    if length - ramp < 1:
        problems.append(f"{name} has no epoch left after its warm-up (no decay)")
    return problems


def schedule_problems(s: Schedule) -> list[str]:
    """Each way the pretrained arm's schedule does not fit its epochs (empty: it fits)."""
    wants = s.requested_warmup > 0
    if not s.decoder_epochs:
        return _phase_problems("the run", s.num_epochs, s.warmup_epochs, wants)
    return (_phase_problems(f"the decoder-only tooth ({s.decoder_epochs} of {s.num_epochs} epochs)",
                            s.decoder_epochs, s.warmup_epochs, wants)
            + _phase_problems(f"the whole-network tooth ({s.num_epochs - s.decoder_epochs} epochs)",
                              s.num_epochs - s.decoder_epochs, s.warmup_epochs, wants))


def pretrained_schedule(p: Protocol) -> Schedule:
    """The nnU-Net route's pretrained-arm schedule under protocol ``p``."""
    nn = p.nnunet
    return resolve_schedule(SCHEDULE_TRAINERS[nn.schedule], nn.epochs, nn.warmup_epochs, nn.decoder_epochs)


def schedule_flags(p: Protocol) -> list[Flag]:
    """Flags for a protocol whose nnU-Net pretrained schedule does not fit its budget (before anything runs)."""
    if "nnunet" not in p.routes or not any(t in p.tasks for t in p.nnunet.tasks):
        return []
    s = pretrained_schedule(p)
    problems = schedule_problems(s)
    if not problems:
        return []
    reason = (f"pretrained arm's schedule ({s.trainer}, {s.num_epochs} epochs x {p.nnunet.iterations} iterations, "
              f"warm-up {s.warmup_epochs}" + (f", decoder tooth {s.decoder_epochs}" if s.decoder_epochs else "")
              + f" epoch(s)) does not fit the budget: {'; '.join(problems)}")
    if s.decoder_epochs:
        fix = (f"Set nnunet.warmup_epochs: {MIN_PHASE_EPOCHS}, nnunet.decoder_epochs >= {MIN_PHASE_EPOCHS + 1} and "
               f"nnunet.epochs >= decoder_epochs + {MIN_PHASE_EPOCHS + 1}, {ALLOW_HINT}")
    else:
        fix = (f"Set nnunet.warmup_epochs: {MIN_PHASE_EPOCHS} and nnunet.epochs >= {MIN_PHASE_EPOCHS + 1}, "
               f"{ALLOW_HINT}")
    return [Flag("nnunet", reason, fix)]


def cell_budget(p: Protocol, route: str, task: str) -> dict[str, Any]:
    """The fine-tuning budget protocol ``p`` gives a cell; both arms of a pair must record the same one."""
    seg = task in SEGMENTATION_TASKS
    if route == "nnunet":
        nn = p.nnunet
        return {"epochs": nn.epochs, "iterations_per_epoch": nn.iterations, "peak_lr": nn.lr,
                "warmup_epochs": nn.warmup_epochs, "decoder_epochs": nn.decoder_epochs, "schedule": nn.schedule}
    if route == "probe":
        return ({"head_iterations": p.probes.head_iterations, "batch_size": p.monai.batch_size, "lr": p.monai.lr}
                if seg else {"knn_k": p.probes.knn_k, "linear": p.probes.linear, "knn": p.probes.knn})
    iterations = p.monai.iterations if seg else p.monai.classification_iterations
    return {"iterations": iterations, "batch_size": p.monai.batch_size, "lr": p.monai.lr}


def stale_flags(p: Protocol, cached: dict[str, dict[str, Any]],
                training: Callable[[int, int], list[str]] | None = None) -> list[Flag]:
    """Flags for finished cells whose recorded budget (or, given ``training(seed, budget)``, training
    cases) is not what the current protocol gives them."""
    flags = []
    for r in cached.values():
        want = cell_budget(p, r["route"], r["task"])
        have = r.get("budget_settings")
        problems = [] if have == want else [f"budget {have}, the protocol now gives {want}"]
        if training is not None and sorted(r["train_cases"]) != sorted(training(r["seed"], r["budget"])):
            problems.append("other training cases than the current split")
        if problems:
            flags.append(Flag(r["route"], f"cell {r['cell']} was computed with {' and '.join(problems)}",
                              f"Delete cells/{r['cell']}.json to recompute it, or use a new --output_dir, {ALLOW_HINT}",
                              r["task"], r["budget"], None if r["pretext"] == "scratch" else r["pretext"]))
    return flags


def pairing_flags(results: dict[str, dict[str, Any]]) -> list[Flag]:
    """Flags for pretrained cells whose scratch twin (same route, task, budget, seed) recorded another
    budget or other training cases."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in results.values():
        groups[(r["route"], r["task"], r["budget"], r["seed"])].append(r)
    flags = []
    for (route, task, budget, seed), cells in groups.items():
        twin = next((c for c in cells if c["pretext"] == "scratch"), None)
        for c in cells:
            if twin is None or c is twin:
                continue
            what = [k for k, a, b in (("budget", c.get("budget_settings"), twin.get("budget_settings")),
                                      ("training cases", sorted(c["train_cases"]), sorted(twin["train_cases"])))
                    if a != b]
            if what:
                flags.append(Flag(route, f"{c['pretext']} and scratch at seed {seed} ran with different "
                                  f"{' and '.join(what)}", f"Recompute both cells (delete their cells/*.json), "
                                  f"{ALLOW_HINT}", task, budget, c["pretext"]))
    return flags


def enforce(flags: list[Flag], allow_unfair: bool) -> None:
    """Refuse (one line: the first reason, how many in all, and the fix) unless ``allow_unfair``."""
    if flags and not allow_unfair:
        first = flags[0]
        more = f" (and {len(flags) - 1} more)" if len(flags) > 1 else ""
        raise PluginError(f"Not a meaningful comparison on the {first.route} route: {first.reason}{more}.",
                          first.fix + ".")
