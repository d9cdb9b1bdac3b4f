"""``vlnode train``: fit a model from an archive and write a new package version."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (findings, impression, segmentation) from an archive",
        description=(
            "Train the model a training configuration describes (TOML; its `task` says which: "
            "findings, e.g. conf/findings/medpix-tiny.toml, impression under conf/impression/, "
            "segmentation under conf/segmentation/), write it as a new package version under the "
            "registry (never overwriting one), evaluate it on the dev split and register it "
            "in the store (inactive; use `vlnode models activate`). Under torchrun every rank "
            "trains; rank 0 writes."
        ),
    )
    parser.add_argument(
        "--config", dest="train_config", required=True, metavar="FILE", help="training config"
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="where packages go (default: <data_dir>/models); <DIR>/<name>/<version>",
    )
    parser.add_argument(
        "--run-dir",
        metavar="DIR",
        help="checkpoints and training log; an existing one with a checkpoint is resumed "
        "(default: a new folder under <data_dir>/runs/<name>/)",
    )
    parser.add_argument("--epochs", type=int, help="override optim.epochs")
    parser.add_argument("--seed", type=int, help="override optim.seed")
    parser.add_argument("--data", metavar="DIR", help="override data.archive")
    parser.add_argument("--no-register", action="store_true", help="do not add it to the store")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--bootstrap", type=int, default=1000, metavar="N", help="bootstrap replicates (1000)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from training.config import TrainConfigError, load_train_config
    from vlnode.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
        config = load_train_config(args.train_config)
    except (SettingsError, TrainConfigError) as exc:
        print(f"vlnode train: {exc}", file=sys.stderr)
        return 2
    optim = config.optim
    if args.epochs is not None:
        if args.epochs < 1:
            print("vlnode train: --epochs must be at least 1", file=sys.stderr)
            return 2
        optim = replace(optim, epochs=args.epochs)
    if args.seed is not None:
        optim = replace(optim, seed=args.seed)
    data = config.data
    if args.data:
        data = replace(data, archive=Path(args.data).resolve())
    config = replace(config, optim=optim, data=data)
    if not config.data.archive.is_dir():
        print(f"vlnode train: archive folder {config.data.archive} does not exist", file=sys.stderr)
        return 2
    data_dir = settings.store.data_dir
    models_root = Path(args.output) if args.output else data_dir / "models"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.run_dir) if args.run_dir else data_dir / "runs" / config.name / stamp

    from training.archive import ArchiveError
    from training.tasks import workflow

    module = workflow(config.task)
    try:
        outcome = module.train_and_package(
            config,
            models_root,
            run_dir,
            progress=not args.no_progress,
            replicates=args.bootstrap,
        )
    except (ArchiveError, ValueError, OSError) as exc:
        print(f"vlnode train: {exc}", file=sys.stderr)
        return 1
    if outcome.package is None:  # a torchrun rank other than 0
        return 0
    print(f"package {outcome.name} version {outcome.version} written to {outcome.package}")
    print(f"content hash {outcome.content_hash}")
    print(f"training log {run_dir / 'train_log.csv'}")
    if outcome.results:
        print("\n".join(module.result_lines(outcome.results)))
    if not args.no_register:
        from vlnode.cli.models import register_package

        register_package(settings, outcome.package, config.task)
    return 0
