"""Deterministic UIDs for the objects vlnode sends back.

A retried delivery must replace the object the PACS already holds, never add a second copy, so
every output UID is derived from what identifies the output (study, package, task, variant and
the role of the UID) instead of being drawn at random.
"""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:vlnode:output-uid:v1")


def output_uid(
    study_instance_uid: str, package_hash: str, task: str, variant: str, role: str
) -> str:
    """A ``2.25.<int>`` UID that is the same for the same five inputs.

    Parameters
    ----------
    study_instance_uid
        The study the output files into.
    package_hash
        The model package's content hash (a new package gives new objects).
    task
        ``findings``, ``impression`` or ``segmentation``.
    variant
        The output kind, e.g. ``"comprehensive3d-sr"``, ``"basic-text-sr"`` or ``"seg"``.
    role
        Which UID of the object: ``"series"``, ``"instance"``, ...

    Raises
    ------
    ValueError
        When an input is empty (two different outputs could then share a UID).
    """
    parts = {
        "study_instance_uid": study_instance_uid,
        "package_hash": package_hash,
        "task": task,
        "variant": variant,
        "role": role,
    }
    empty = [name for name, value in parts.items() if not value]
    if empty:
        raise ValueError(f"output_uid needs every input; empty: {', '.join(empty)}")
    # The names travel with the values so that ("a", "bc") and ("ab", "c") differ.
    return name_uid(*(f"{name}={value}" for name, value in parts.items()))


def name_uid(*parts: str) -> str:
    """A ``2.25.<int>`` UID (PS3.5 B.2) from a name-based UUID of ``parts``: deterministic.

    ``pydicom.uid.generate_uid(prefix=None, ...)`` ignores its entropy sources and returns a
    random UUID, so the UUID is made here (version 5, SHA-1 of the parts in a vlnode namespace).
    """
    if not parts:
        raise ValueError("name_uid needs at least one part")
    return f"2.25.{uuid.uuid5(_NAMESPACE, chr(31).join(parts)).int}"
