"""Text-generation metrics, one reference per image: BLEU-4, ROUGE-L, CIDEr-D.

Written here after the definitions of the papers and of the COCO caption evaluation code,
so that nothing has to be downloaded:

* BLEU-4 (Papineni et al. 2002): corpus-level, clipped n-gram precisions for n = 1..4 summed
  over the corpus, their geometric mean times the brevity penalty; no smoothing.
* ROUGE-L (Lin 2004): per text, the F-measure of the longest common subsequence with
  beta = 1.2 (as in the COCO evaluation); the corpus figure is the mean over texts.
* CIDEr-D (Vedantam et al. 2015, the COCO variant): per text, the mean over n = 1..4 of the
  cosine-like similarity of TF-IDF n-gram vectors with the candidate's weights clipped at the
  reference's, times a Gaussian length penalty (sigma 6), times 10. Document frequencies come
  from the references of the evaluated set. The corpus figure is the mean over texts.

Texts are lower-cased and split into runs of letters and digits (punctuation dropped), like
the PTB tokenisation step of the COCO code.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+")
CIDER_SIGMA = 6.0
ROUGE_BETA = 1.2


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(words: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu(candidates: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` of ``candidates`` against one reference each."""
    _same_length(candidates, references)
    matched = [0] * max_n
    proposed = [0] * max_n
    cand_len = ref_len = 0
    for cand, ref in zip(candidates, references, strict=True):
        c, r = tokenize(cand), tokenize(ref)
        cand_len += len(c)
        ref_len += len(r)
        for n in range(1, max_n + 1):
            cn, rn = ngrams(c, n), ngrams(r, n)
            matched[n - 1] += sum(min(k, rn[g]) for g, k in cn.items())
            proposed[n - 1] += max(0, len(c) - n + 1)
    if cand_len == 0 or any(m == 0 for m in matched):
        return 0.0
    log_precision = sum(math.log(m / p) for m, p in zip(matched, proposed, strict=True)) / max_n
    brevity = 1.0 if cand_len > ref_len else math.exp(1.0 - ref_len / cand_len)
    return brevity * math.exp(log_precision)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str, beta: float = ROUGE_BETA) -> float:
    """ROUGE-L F-measure of one text against its reference."""
    c, r = tokenize(candidate), tokenize(reference)
    lcs = _lcs(c, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l_scores(candidates: Sequence[str], references: Sequence[str]) -> list[float]:
    _same_length(candidates, references)
    return [rouge_l(c, r) for c, r in zip(candidates, references, strict=True)]


def cider_d_scores(
    candidates: Sequence[str],
    references: Sequence[str],
    max_n: int = 4,
    sigma: float = CIDER_SIGMA,
) -> list[float]:
    """Per-text CIDEr-D; document frequencies from ``references`` (one per text)."""
    _same_length(candidates, references)
    refs = [tokenize(r) for r in references]
    cands = [tokenize(c) for c in candidates]
    log_docs = math.log(float(len(refs))) if refs else 0.0
    frequency: list[Counter[tuple[str, ...]]] = []
    for n in range(1, max_n + 1):
        df: Counter[tuple[str, ...]] = Counter()
        for r in refs:
            df.update(set(ngrams(r, n)))
        frequency.append(df)

    def vector(words: list[str], n: int) -> tuple[dict[tuple[str, ...], float], float]:
        counts = ngrams(words, n)
        vec = {
            g: k * (log_docs - math.log(max(1.0, float(frequency[n - 1][g]))))
            for g, k in counts.items()
        }
        return vec, math.sqrt(sum(v * v for v in vec.values()))

    scores = []
    for c, r in zip(cands, refs, strict=True):
        delta = float(len(c) - len(r))
        total = 0.0
        for n in range(1, max_n + 1):
            vc, norm_c = vector(c, n)
            vr, norm_r = vector(r, n)
            overlap = sum(min(v, vr[g]) * vr[g] for g, v in vc.items() if g in vr)
            if norm_c and norm_r:
                total += overlap / (norm_c * norm_r) * math.exp(-(delta**2) / (2 * sigma**2))
        scores.append(total / max_n * 10.0)
    return scores


def _same_length(candidates: Sequence[str], references: Sequence[str]) -> None:
    if len(candidates) != len(references):
        raise ValueError(
            f"{len(candidates)} candidate texts for {len(references)} references: one each"
        )
