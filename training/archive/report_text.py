"""Cleaning radiology report text: de-identification placeholders, sections, whitespace."""

from __future__ import annotations

import re
import unicodedata

# De-identification placeholders: Open-i writes "XXXX" (sometimes glued to a word, as in
# "x-XXXX"); other archives use "[**...**]" (MIMIC) or "___".
_PLACEHOLDERS = re.compile(r"\[\*\*[^\]]*\*\*\]|_{3,}|(?<![A-Za-z])[-]?X{2,}(?![A-Za-z])")
_BULLETS = re.compile(r"^[\s•·\-\*]+|(?<=\s)[•·]\s*", re.MULTILINE)
_SPACE = re.compile(r"\s+")
_EMPTY_VALUES = {"", "none", "none.", "n/a", "na", "nan", "null"}
_SECTION_HEAD = re.compile(
    r"(?im)^\s*(indication|history|clinical history|comparison|technique|findings|"
    r"impression|conclusion|diagnosis)\s*:"
)
# "Normal chest x-XXXX." keeps "x" with a dangling hyphen after the placeholder goes.
_DANGLING = re.compile(r"\b(\w+)-(?=\s|[.,;:]|$)")


def clean_text(text: str | None) -> str:
    """One line of clean text; placeholders removed; "None." and the like become ""."""
    if not text:
        return ""
    out = unicodedata.normalize("NFKC", text)
    out = _PLACEHOLDERS.sub(" ", out)
    out = _BULLETS.sub(" ", out)
    out = _DANGLING.sub(r"\1", out)
    out = _SPACE.sub(" ", out).strip()
    out = re.sub(r"\s+([.,;:])", r"\1", out)
    out = re.sub(r"([.,;:])\1+", r"\1", out)
    if out.lower() in _EMPTY_VALUES or not any(c.isalnum() for c in out):
        return ""
    return out


def split_sections(report: str) -> dict[str, str]:
    """Split a free-text report at headings (``FINDINGS:``, ``IMPRESSION:``...).

    Text before the first heading goes under ``"text"``; each section is cleaned.
    """
    sections: dict[str, str] = {}
    matches = list(_SECTION_HEAD.finditer(report))
    head = report[: matches[0].start()] if matches else report
    if clean_text(head):
        sections["text"] = clean_text(head)
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(report)
        name = m.group(1).lower().replace("clinical history", "history")
        name = {"indication": "history", "conclusion": "impression"}.get(name, name)
        body = clean_text(report[m.end() : end])
        if body:
            sections[name] = f"{sections[name]} {body}" if name in sections else body
    return sections


def sentences(text: str) -> list[str]:
    """Split clean text into sentences (for sampling parts of long reports)."""
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9])", text)
    return [p.strip() for p in parts if p.strip()]
