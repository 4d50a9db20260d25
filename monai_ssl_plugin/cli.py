"""``monai-ssl``: the command line (fire). Thin: parse, call the library, print. Imported by nobody.

Every command turns a :class:`~monai_ssl_plugin.errors.PluginError` into one line on stderr and
exit code 2, so bad input never ends in a traceback. Each command imports its own stack inside the
method, so `monai-ssl --help` and the light commands do not pay for torch, MONAI and nnU-Net.
"""

from __future__ import annotations

import sys
from pathlib import Path


class Commands:
    """Self-supervised pretraining for nnU-Net and MONAI. Run `monai-ssl COMMAND --help` for details."""

    def demo(self, output_dir: str = "demo_output", device: str = "auto", seed: int = 0, budgets: str = "4,1",
             live_pretraining_steps: int = 40, weights: str = "shipped"):
        """The main job: demo cohort -> nnU-Net plans -> live pretraining (the recommended pretext) -> shipped SSL weights -> few-label
        fine-tuning of the SSL arm and its from-scratch twin at each label budget -> Dice on held-out subjects.

        --weights live fine-tunes from this run's short pretraining instead of the bundle's shipped weights."""
        from monai_ssl_plugin.workflows.demo import run_demo

        run_demo(output_dir=output_dir, device=device, seed=seed, budgets=_int_list(budgets, "budgets"),
                 live_pretraining_steps=live_pretraining_steps, weights=weights)

    def demo_weights(self, output_dir: str = "runs/demo_weights", steps: int = 1200, device: str = "auto",
                     bundle: str | None = None):
        """Pretrain the demo's shipped weights (the recommended bundle's models/model.pt) on the demo cohort, recording
        this command and the data in the file; updates the bundle's large_files.yml sha256."""
        from monai_ssl_plugin.workflows.demo import make_demo_weights

        print(f"wrote {make_demo_weights(output_dir=output_dir, steps=steps, device=device, bundle=bundle)}")

    def make_demo_data(self, raw_dir: str, dataset_id: int = 501, n_labelled: int = 12, n_unlabelled: int = 24,
                       spacing: float = 2.0, seed: int = 0):
        """Write the MNI152-based brain tissue cohort as an nnU-Net raw dataset (no download)."""
        from monai_ssl_plugin.data.demo_cohort import make_demo_dataset

        path = make_demo_dataset(raw_dir, dataset_id=dataset_id, n_labelled=n_labelled, n_unlabelled=n_unlabelled,
                                 spacing=spacing, seed=seed)
        print(f"wrote {path}")

    def make_synthetic_data(self, raw_dir: str, dataset_id: int = 990, n_labelled: int = 6, n_unlabelled: int = 6,
                            size: int = 32, modality: str = "MRI", n_channels: int = 1, seed: int = 0):
        """Write a small synthetic nnU-Net raw dataset (ellipsoid 'organs'), for tests and smoke runs."""
        from monai_ssl_plugin.data.synthetic import make_synthetic_dataset

        path = make_synthetic_dataset(raw_dir, dataset_id=dataset_id, n_labelled=n_labelled, n_unlabelled=n_unlabelled,
                                      shape=(size,) * 3, modality=modality, n_channels=n_channels, seed=seed)
        print(f"wrote {path}")

    def check_data(self, path: str, configuration: str = "3d_fullres", plans_identifier: str = "nnUNetPlans",
                   plans: str | None = None, include_test: bool = True):
        """Check a dataset before a long run: unreadable files, NaN/Inf, empty volumes, wrong dimensionality."""
        from monai_ssl_plugin.data import check_data

        problems = check_data(path, configuration, plans_identifier, plans=plans, include_test=include_test)
        for p in problems:
            print(p)
        if problems:
            sys.exit(1)
        print(f"{path}: no problems found")

    def pretrain(self, dataset_dir: str, output_dir: str, bundle: str = "mae_ssl_pretraining", resume: bool = False,
                 **overrides):
        """Run a pretraining bundle (same as `python -m monai.bundle run`); extra --key value pairs override config ids."""
        from monai_ssl_plugin.engine.run import pretrain

        ckpt = pretrain(bundle=bundle, dataset_dir=dataset_dir, output_dir=output_dir, resume=resume, **overrides)
        print(f"checkpoint: {ckpt}")

    def nnunet_plans(self, dataset: str, backbone: str | None = None, checkpoint: str | None = None,
                     source_plans: str = "nnUNetPlans", configuration: str = "3d_fullres",
                     plans_identifier: str | None = None, patch_size: tuple | None = None, batch_size: int | None = None,
                     spacing: str | tuple = "target", normalization: str = "target"):
        """Write a plans variant whose architecture equals a preset or a pretrained checkpoint (-p for nnUNetv2_train).

        --spacing checkpoint|"[z,y,x]" / --normalization checkpoint take the pretraining's instead of the target's
        (one nnUNetv2_preprocess run, printed)."""
        from monai_ssl_plugin.nnunet.plans import write_plans_variant

        path = write_plans_variant(dataset, backbone=backbone, checkpoint=checkpoint, source_plans=source_plans,
                                   configuration=configuration, plans_identifier=plans_identifier,
                                   patch_size=list(patch_size) if patch_size else None, batch_size=batch_size,
                                   spacing=spacing if isinstance(spacing, str) else list(spacing),
                                   normalization=normalization)
        print(f"wrote {path}\nuse: -p {path.stem}")

    def export_nnunet(self, checkpoint: str, output: str | None = None, dataset: str | None = None,
                      configuration: str = "3d_fullres", plans_identifier: str = "nnUNetPlans", adapt: str = "channels",
                      channels: int | None = None):
        """Export pretrained weights for nnU-Net (-pretrained_weights, the plugin's trainers, nnUNetv2_train_pretrained).

        --adapt: shape differences the trainer will adapt (as nnUNet_SSL_adapt: channels,kernels,stages | all | none).
        --channels: input channels of the fine-tuning data (default: the dataset's); a PlainConvUNet stem is
        then repeated in the file, for nnU-Net's nnssl route (docs/nnunet.md)."""
        import json

        from monai_ssl_plugin.export.nnunet import ADAPTATION_PLAN_FILE, export_nnunet
        from monai_ssl_plugin.transfer.nnssl import nnssl_parser_problem

        path = export_nnunet(checkpoint, output, dataset=dataset, configuration=configuration,
                             plans_identifier=plans_identifier, allowed_adaptations=adapt,
                             target_channels=int(channels) if channels else None)
        print(f"wrote {path}")
        problem = nnssl_parser_problem(json.loads((path.parent / ADAPTATION_PLAN_FILE).read_text()))
        if problem:
            print(f"note: nnssl's own AdaptationPlan.from_dict cannot read its plan ({problem}); nnU-Net's "
                  "nnUNetv2_train_pretrained and the plugin's trainers read it (docs/nnunet.md)")

    def monai_overlay(self, ssl: str, bundle: str, target: str = "auto", **options):
        """Write configs/ssl_init.yaml so an existing MONAI bundle trains from SSL weights (merge it after train.json)."""
        from monai_ssl_plugin.monai_bundles.overlay import monai_overlay

        print(monai_overlay(ssl, bundle, target, **options))

    def make_lesion_data(self, output_dir: str, n_cases: int = 12, n_val: int = 2, size: int = 32,
                         spacing: float = 1.5, seed: int = 0):
        """Synthetic volumes with lesions: datalists for the classification, detection and segmentation bundles."""
        from monai_ssl_plugin.monai_bundles.demo_data import make_lesion_dataset

        print(f"wrote {make_lesion_dataset(output_dir, n_cases=n_cases, n_val=n_val, size=size, spacing=spacing, seed=seed)}")

    def package_bundle(self, run_or_checkpoint: str, bundle: str = "mae_ssl_pretraining", name: str | None = None,
                       out: str = ".", version: str | None = None, changelog: str | None = None, url: str | None = None):
        """Package a pretrained run as a model-zoo bundle (models/model.pt, provenance, sha256) and NAME.zip."""
        from monai_ssl_plugin.sharing import package_bundle

        print(f"wrote {package_bundle(run_or_checkpoint, bundle=bundle, name=name, out=out, version=version, changelog=changelog, url=url)}")

    def install_bundle(self, source: str, dest: str, sha256: str | None = None, trust_code: bool = False):
        """Install a shared bundle (folder, zip or URL), every file verified against its manifest.

        Weights load with weights_only=True; configs that run Python beyond the plugin's and MONAI's own
        are refused unless --trust_code true."""
        from monai_ssl_plugin.engine.run import as_bool
        from monai_ssl_plugin.sharing import install_bundle

        print(f"installed {install_bundle(source, dest, sha256=sha256, trust_code=as_bool(trust_code))}")

    def verify_bundle(self, folder: str, sha256: str | None = None):
        """Verify an installed bundle (every file, the weights) and list the Python its configs run.

        Lists the imports, _target_s and $ expressions beyond the plugin's and MONAI's own."""
        from monai_ssl_plugin.sharing import foreign_code, verify_bundle

        verify_bundle(folder, sha256=sha256)
        foreign = foreign_code(folder)
        for where, code in foreign:
            print(f"runs: {where}: {code}")
        print(f"{folder}: verified (every file matches its manifest); "
              + (f"its configs run {len(foreign)} piece(s) of Python listed above that neither the plugin nor "
                 "MONAI ships: read them before `monai.bundle run`" if foreign else
                 "its configs run only the plugin's and MONAI's own code"))

    def nnunet_env(self):
        """Print the line that makes nnU-Net find the plugin's trainers (-tr nnUNetTrainerSSL ...)."""
        from monai_ssl_plugin.nnunet import env_line

        print(env_line())

    def recommend(self, modality: str, task: str, n_labelled: int, n_unlabelled: int, dims: int = 3,
                  traits: str | tuple = (), device: str | None = None, top_k: int = 5, output: str = "table",
                  verbose: bool = True, measured: str | None = None):
        """Rank pretext bundles for a modality, downstream task and label budget, with reasons and evidence.

        --measured FILE reads time/memory figures from FILE instead of the packaged guide/measured.yaml."""
        from monai_ssl_plugin.errors import PluginError
        from monai_ssl_plugin.guide import recommend_command

        if output not in ("table", "json"):
            raise PluginError(f"--output {output!r} is not a format of recommend.", "Pass --output table or --output json.")
        if measured is not None and not Path(str(measured)).is_file():
            raise PluginError(f"--measured {measured} is not a file.",
                              "Pass a measured-figures YAML (benchmarks/bench_pretexts.py --write-measured writes one).")
        print(recommend_command(modality, task, n_labelled, n_unlabelled, dims=dims, traits=traits, device=device,
                                top_k=top_k, output=output, verbose=verbose, measured_path=measured))

    def evaluate(self, config: str, output_dir: str, routes: str | tuple | None = None, allow_unfair: bool = False):
        """Run an evaluation protocol (YAML): pretrain, fine-tune / probe at label budgets, report (resumable).

        --routes nnunet (or monai, probe; comma-separated) runs only those cells, e.g. in a second process once
        pretraining is done; a last run without --routes assembles the whole record.
        A comparison that is not meaningful (unequal budgets, a pretrained schedule that does not fit the
        budget) is refused; --allow_unfair true runs it anyway and marks every affected number in the report."""
        import logging

        from monai_ssl_plugin.evaluation.runner import evaluate

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        chosen = None if routes is None else [r.strip() for r in ([routes] if isinstance(routes, str) else routes)
                                               for r in r.split(",") if r.strip()]
        from monai_ssl_plugin.engine.run import as_bool

        record = evaluate(config, output_dir, routes=chosen, allow_unfair=as_bool(allow_unfair))
        print(f"{len(record['cells'])} cells; report: {Path(record['output_dir']) / 'report.md'}")

    def list(self):
        """List the registered backbones, pretexts and the bundles shipped with the package."""
        from monai_ssl_plugin.backbones import list_backbones
        from monai_ssl_plugin.bundles import list_bundles
        from monai_ssl_plugin.pretext import list_pretexts

        print("backbones:", ", ".join(list_backbones()))
        print("pretexts:", ", ".join(f"{k} ({v})" for k, v in list_pretexts().items()))
        print("bundles:", ", ".join(list_bundles()))

    def pretrained(self, action: str = "list", name: str | None = None, file: str | None = None, force: bool = False):
        """Published SSL weights as a starting point: `pretrained list`, `pretrained info NAME`, `pretrained get NAME`
        (download, sha256-verify, convert once into the plugin's checkpoint; --file PATH uses a file downloaded by hand)."""
        from monai_ssl_plugin.errors import PluginError
        from monai_ssl_plugin.pretrained.commands import run_pretrained

        if action not in ("list", "info", "get"):
            raise PluginError(f"`pretrained {action}` is not an action.", "Use `monai-ssl pretrained list|info|get NAME`.")
        print(run_pretrained(action, name, file=file, force=force))

    def copy_bundle(self, bundle: str, dest: str = ".", init_weights: str = "false"):
        """Copy a shipped bundle to DEST/BUNDLE as plain, self-contained files, to read, edit or run with MONAI.

        --init_weights true also writes models/model.pt with the UNTRAINED initial weights of network_def
        where the bundle ships none: what the model zoo's checks (ci/verify_bundle.py) need to run."""
        from monai_ssl_plugin.bundles import copy_bundle, train_configs
        from monai_ssl_plugin.engine.run import as_bool

        target = copy_bundle(bundle, dest)
        if as_bool(init_weights):
            from monai_ssl_plugin.sharing.zoo import write_initial_weights

            written = write_initial_weights(target)
            print(f"wrote {written}: UNTRAINED initial weights (seed 0), for the model zoo's checks only" if written
                  else f"kept the weights {bundle} ships in {target / 'models' / 'model.pt'}")
        files = [str(Path(f).relative_to(Path.cwd())) if Path(f).is_relative_to(Path.cwd()) else f
                 for f in train_configs(target)]
        print(f"copied {bundle} to {target}\nrun: python -m monai.bundle run --config_file \"{files}\" "
              "--dataset_dir DATA --output_dir RUN")


def _int_list(value, name: str) -> tuple[int, ...]:
    """A list of positive integers from fire: ``4,1`` arrives as a tuple, ``4`` as an int, ``"4 1"`` as a string."""
    from monai_ssl_plugin.errors import PluginError

    items = value if isinstance(value, (tuple, list)) else str(value).replace(",", " ").split()
    try:
        out = tuple(int(v) for v in items)
    except (TypeError, ValueError):
        out = ()
    if not out or min(out) < 1:
        raise PluginError(f"--{name} {value!r} is not a list of positive integers.", f"Give e.g. --{name} 4,1.")
    return out


def usage() -> str:
    """Every command with the first line of its docstring (what ``monai-ssl --help`` prints)."""
    import inspect

    lines = [f"usage: monai-ssl COMMAND [--flag value ...]   ({Commands.__doc__.strip()})", "", "commands:"]
    for name, fn in inspect.getmembers(Commands, inspect.isfunction):
        if not name.startswith("_"):
            lines.append(f"  {name.replace('_', '-'):<20} {(fn.__doc__ or '').strip().splitlines()[0]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run one command; a PluginError (or a full / read-only disk) is one line on stderr and exit code 2."""
    import fire

    from monai_ssl_plugin.errors import plugin_error_in

    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return
    try:
        fire.Fire(Commands, command=args, name="monai-ssl")
    except Exception as e:
        error = plugin_error_in(e)
        if error is None:
            raise
        print(f"monai-ssl: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
