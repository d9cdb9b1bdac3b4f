"""``vlnode search "right pleural effusion"``: the read studies that best match a text.

ELIXR's semantic search: every series the worker read keeps its image embedding in the store,
in the embedding space of the package that read it. The query is embedded by each of those
packages and compared with that package's images only (spaces of different packages are not
comparable); a study's score is its best series' cosine similarity.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vlnode.cli.common import settings_or_exit


def register(sub: Any) -> None:
    parser = sub.add_parser("search", help="find read studies by a text (semantic search)")
    parser.add_argument("query", help='e.g. "right pleural effusion"')
    parser.add_argument("--top", type=int, default=10, help="studies to list (default 10)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from inference.packages import PackageError, load_findings_package
    from store.database import StoreError, make_engine, upgrade_schema
    from store.embeddings import load_embeddings
    from vlnode.cli.status import table

    settings = settings_or_exit(args)
    if not args.query.strip():
        print("vlnode search: the query is empty", file=sys.stderr)
        return 2
    if args.top < 1:
        print("vlnode search: --top must be at least 1", file=sys.stderr)
        return 2
    try:
        engine = make_engine(settings.database_url)
        upgrade_schema(engine)
        stored = load_embeddings(engine)
    except StoreError as exc:
        print(f"vlnode: {exc}", file=sys.stderr)
        return 2
    if not stored:
        print("no study has been read yet: nothing to search")
        return 0
    best: dict[str, tuple[float, str, str]] = {}  # study -> (score, series, package)
    for package_hash in sorted({e.package_hash for e in stored}):
        rows = [e for e in stored if e.package_hash == package_hash]
        try:
            model = load_findings_package(rows[0].package_path)
        except PackageError as exc:
            print(f"vlnode search: skipping {rows[0].package_name}: {exc}", file=sys.stderr)
            continue
        if model.manifest.content_hash != package_hash:
            print(
                f"vlnode search: skipping {rows[0].package_name}: the package at "
                f"{rows[0].package_path} is no longer the one that read these studies",
                file=sys.stderr,
            )
            continue
        query = model.embed_texts([args.query])[0].numpy()
        images = np.stack([e.vector for e in rows])
        scores = images @ query
        for row, value in zip(rows, scores.tolist(), strict=True):
            label = f"{row.package_name} {row.package_version}"
            if value > best.get(row.study_instance_uid, (-2.0, "", ""))[0]:
                best[row.study_instance_uid] = (value, row.series_instance_uid, label)
    ranked = sorted(best.items(), key=lambda item: -item[1][0])[: args.top]
    print(
        table(
            ("score", "study instance uid", "best series", "package"),
            [(f"{s:.3f}", study, series, pkg) for study, (s, series, pkg) in ranked],
        )
    )
    return 0
