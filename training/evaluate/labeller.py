"""A rule-based, negation-aware labeller: which catalogue findings a text states.

For each finding of a catalogue (``conf/findings/*.toml``) the labeller looks, sentence by
sentence, for its phrases: its name, display name, ``terms`` and ``positive`` prompts as
written in the file (whole words, an optional plural ``s``/``es``, case ignored). A mention is

* ``absent`` when a negation cue governs it in its clause: before it ("no", "without",
  "negative for", "free of", "absence of", "not", "never") or after it ("is absent", "is not
  seen", "has resolved", "ruled out"); a ``negative`` prompt of the catalogue ("no pleural
  effusion", "heart size is normal", "lungs are clear") is an absent mention too;
* ``uncertain`` when a hedge governs it ("possible", "probable", "may represent", "suspicious
  for", "cannot be excluded", "is not excluded", "not ruled out", "versus"). Hedges are
  checked before negations, so "effusion is not excluded" and "cannot rule out effusion" are
  uncertain, not absent;
* ``present`` otherwise.

Negation and hedges apply to binary findings (effusion, cardiomegaly...). A member of a group
(modality, plane, body region) is present wherever it is named: "no mass in the liver" is
still about the abdomen.

A clause ends at a sentence end, ";", ",", "but", "however", "although", "except" and
"which" (NegEx's scope terminators, simplified). A finding mentioned several times takes the
strongest statement: present over uncertain over absent (CheXpert's aggregation). A finding
not mentioned gets no label.

For agreement figures (:func:`micro_f1`) uncertain counts as present, the "U-Ones" policy:
a hedged finding is one the text asks the reader to consider; the choice is declared with
every figure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from inference.toml_file import read_toml
from inference.zero_shot.catalogue import CatalogueError
from training.archive.report_text import sentences


class Mention(Enum):
    PRESENT = "present"
    UNCERTAIN = "uncertain"
    ABSENT = "absent"


_STRENGTH = {Mention.PRESENT: 2, Mention.UNCERTAIN: 1, Mention.ABSENT: 0}
_HEDGE_BEFORE = (
    r"possible|possibly|probable|probably|likely|questionable|suspicious for|suspected|"
    r"suggestive of|suggests|suggesting|concerning for|concern for|may represent|may be|"
    r"might be|could be|could represent|cannot exclude|can not exclude|cannot rule out|"
    r"can not rule out|not excluded|differential includes|versus|vs|equivocal|borderline|"
    r"presumed|presumably"
)
_HEDGE_AFTER = (
    r"cannot be excluded|can not be excluded|is not excluded|are not excluded|not excluded|"
    r"not ruled out|cannot be ruled out|is possible|are possible|is suspected|is likely|"
    r"versus|vs|is questioned|may be present"
)
_NEGATION_BEFORE = (
    r"no|without|negative for|free of|absence of|absent|not|never|none|nor|no evidence of|"
    r"no sign of|no signs of|rules out|ruled out|resolution of|resolved"
)
_NEGATION_AFTER = (
    r"is absent|are absent|is not seen|are not seen|is not present|are not present|"
    r"not seen|not identified|not present|not visualized|has resolved|have resolved|"
    r"resolved|is ruled out|ruled out|is excluded|are excluded|is gone|is normal"
)
_TERMINATORS = re.compile(r"[;,]|\b(?:but|however|although|though|except|which|whereas)\b")


def _cue(words: str, anchored: str) -> re.Pattern[str]:
    return re.compile(anchored.format(f"(?:{words})"))


# A cue before the phrase may have other words in between (within the clause); a cue after it
# must follow the phrase (allowing a few words: "effusion on the left is not seen").
_HEDGE_PRE = _cue(_HEDGE_BEFORE, r"\b{}\b")
_HEDGE_POST = _cue(_HEDGE_AFTER, r"\b{}\b")
_NEG_PRE = _cue(_NEGATION_BEFORE, r"\b{}\b")
_NEG_POST = _cue(_NEGATION_AFTER, r"\b{}\b")


@dataclass(frozen=True)
class LabelledFinding:
    """A finding the labeller looks for: its phrases and its absence statements."""

    name: str
    group: str | None
    phrases: tuple[re.Pattern[str], ...]
    absent_phrases: tuple[re.Pattern[str], ...]


def _phrase(text: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in text.lower().replace("_", " ").split()]
    return re.compile(r"(?<![a-z0-9])" + r"[\s-]+".join(words) + r"(?:s|es)?(?![a-z0-9])")


class Labeller:
    """Labels texts with the findings of one or more catalogues."""

    def __init__(self, findings: Sequence[LabelledFinding]) -> None:
        if not findings:
            raise ValueError("a labeller needs at least one finding")
        self.findings = tuple(findings)

    @classmethod
    def from_catalogues(cls, paths: Iterable[Path]) -> Labeller:
        findings: list[LabelledFinding] = []
        for path in paths:
            raw = read_toml(Path(path), "finding catalogue", CatalogueError)
            entries = raw.get("finding", [])
            if not isinstance(entries, list) or not entries:
                raise CatalogueError(f"{path}: no [[finding]] entries")
            for entry in entries:
                if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                    raise CatalogueError(f"{path}: every [[finding]] needs a name")
                texts = [
                    entry["name"],
                    str(entry.get("display", "")),
                    *entry.get("terms", []),
                    *entry.get("positive", []),
                ]
                unique = sorted({t.lower() for t in texts if t}, key=lambda t: (-len(t), t))
                negative = sorted({t.lower() for t in entry.get("negative", []) if t})
                findings.append(
                    LabelledFinding(
                        name=entry["name"],
                        group=entry.get("group"),
                        phrases=tuple(_phrase(t) for t in unique),
                        absent_phrases=tuple(_phrase(t) for t in negative),
                    )
                )
        return cls(findings)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.findings)

    def label(self, text: str) -> dict[str, Mention]:
        """The findings ``text`` mentions, each with its strongest statement."""
        out: dict[str, Mention] = {}
        for sentence in sentences(text) or [text]:
            lowered = sentence.lower()
            for finding in self.findings:
                for mention in _mentions(lowered, finding):
                    old = out.get(finding.name)
                    if old is None or _STRENGTH[mention] > _STRENGTH[old]:
                        out[finding.name] = mention
        return out

    def positives(self, text: str) -> set[str]:
        """The findings stated present or uncertain (U-Ones)."""
        return {n for n, m in self.label(text).items() if m is not Mention.ABSENT}


def _mentions(sentence: str, finding: LabelledFinding) -> list[Mention]:
    found: list[Mention] = []
    covered: list[tuple[int, int]] = []
    for pattern in finding.absent_phrases:
        for m in pattern.finditer(sentence):
            found.append(Mention.ABSENT)
            covered.append(m.span())
    for pattern in finding.phrases:
        for m in pattern.finditer(sentence):
            start, end = m.span()
            if any(a <= start and end <= b for a, b in covered):
                continue  # inside an absence statement or a longer phrase already read
            covered.append((start, end))
            # A group member (modality, plane, region) describes the image whatever is said
            # near it: "no mass in the liver" is still an image of the abdomen.
            found.append(Mention.PRESENT if finding.group else _status(sentence, start, end))
    return found


def _status(sentence: str, start: int, end: int) -> Mention:
    before = _clause_before(sentence[:start])
    after = _clause_after(sentence[end:])
    if _HEDGE_PRE.search(before) or _HEDGE_POST.match(_lead(after)):
        return Mention.UNCERTAIN
    if _NEG_PRE.search(before) or _NEG_POST.match(_lead(after)):
        return Mention.ABSENT
    return Mention.PRESENT


def _clause_before(text: str) -> str:
    parts = _TERMINATORS.split(text)
    return parts[-1] if parts else ""


def _clause_after(text: str) -> str:
    parts = _TERMINATORS.split(text)
    return parts[0] if parts else ""


def _lead(after: str) -> str:
    """The words after a phrase, skipping up to four words of a location ("on the left")
    so that a post-cue that follows them still counts: the match must start the result."""
    words = after.split()
    for skip in range(min(5, len(words) + 1)):
        rest = " ".join(words[skip:])
        if _HEDGE_POST.match(rest) or _NEG_POST.match(rest):
            return rest
    return " ".join(words)


@dataclass(frozen=True)
class Agreement:
    """Micro-averaged agreement over (text, finding) pairs: counts and F1."""

    true_positive: int
    false_positive: int
    false_negative: int

    @property
    def f1(self) -> float:
        denominator = 2 * self.true_positive + self.false_positive + self.false_negative
        return 2 * self.true_positive / denominator if denominator else float("nan")


def micro_f1(
    predicted: Sequence[set[str]], reference: Sequence[set[str]], names: Iterable[str]
) -> Agreement:
    """Micro F1 of ``predicted`` positives against ``reference`` positives, pooled over every
    text and every finding in ``names`` (a finding neither names counts nowhere)."""
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predictions for {len(reference)} references")
    keep = set(names)
    tp = fp = fn = 0
    for p, r in zip(predicted, reference, strict=True):
        p, r = p & keep, r & keep
        tp += len(p & r)
        fp += len(p - r)
        fn += len(r - p)
    return Agreement(tp, fp, fn)
