"""Series image embeddings by findings package, kept for text-to-image search (``vlnode search``).

A vector is stored as little-endian float32 bytes with its length; one row per series and
package (by content hash), replaced when the same package reads the series again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, select

from store.database import dialect_insert
from store.tables import SeriesEmbedding, utcnow

_DTYPE = np.dtype("<f4")


@dataclass(frozen=True)
class StoredEmbedding:
    """One series' embedding by one package."""

    study_instance_uid: str
    series_instance_uid: str
    package_name: str
    package_version: str
    package_hash: str
    package_path: str
    vector: NDArray[np.float32]  # one dimension


def save_embedding(
    engine: Engine,
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    package_name: str,
    package_version: str,
    package_hash: str,
    package_path: str,
    vector: NDArray[np.floating] | NDArray[np.float32],
) -> None:
    """Record (or replace) the embedding of a series by a package.

    Raises
    ------
    ValueError
        The vector is not one-dimensional and finite.
    """
    array = np.asarray(vector)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"an embedding is a non-empty 1-D vector, not shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"the embedding of series {series_instance_uid} has NaN or inf values")
    values = {
        "study_instance_uid": study_instance_uid,
        "package_name": package_name,
        "package_version": package_version,
        "package_path": package_path,
        "dimension": int(array.size),
        "vector": array.astype(_DTYPE).tobytes(),
        "created_at": utcnow(),
    }
    insert = dialect_insert(engine)
    statement = insert(SeriesEmbedding).values(
        series_instance_uid=series_instance_uid, package_hash=package_hash, **values
    )
    with engine.begin() as conn:
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[SeriesEmbedding.series_instance_uid, SeriesEmbedding.package_hash],
                set_=values,
            )
        )


def load_embeddings(engine: Engine) -> list[StoredEmbedding]:
    """Every stored embedding, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(SeriesEmbedding).order_by(SeriesEmbedding.id)).all()
    return [
        StoredEmbedding(
            study_instance_uid=row.study_instance_uid,
            series_instance_uid=row.series_instance_uid,
            package_name=row.package_name,
            package_version=row.package_version,
            package_hash=row.package_hash,
            package_path=row.package_path,
            vector=np.frombuffer(row.vector, dtype=_DTYPE, count=row.dimension).astype(np.float32),
        )
        for row in rows
    ]
