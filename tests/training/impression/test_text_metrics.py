"""BLEU-4, ROUGE-L and CIDEr-D against values computed by hand (the arithmetic is in the
comments)."""

from __future__ import annotations

import math

import pytest

from training.evaluate.text_metrics import bleu, cider_d_scores, rouge_l, tokenize


def test_tokens_are_lower_case_words_without_punctuation() -> None:
    assert tokenize("Axial T2-weighted MRI, left.") == ["axial", "t2", "weighted", "mri", "left"]


def test_bleu_by_hand() -> None:
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    # Clipped precisions 5/6, 3/5, 2/4, 1/3; equal lengths, so no brevity penalty.
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(expected)
    # Every precision 1, but 4 words against 6: brevity penalty exp(1 - 6/4).
    assert bleu(["the cat sat on"], ["the cat sat on the mat"]) == pytest.approx(math.exp(-0.5))
    # No matching 4-gram anywhere: 0 (no smoothing).
    assert bleu(["a b c"], ["a b c"]) == 0.0
    with pytest.raises(ValueError, match="one each"):
        bleu(["a"], [])


def test_rouge_l_by_hand() -> None:
    # LCS 5; precision 5/6, recall 5/5; F with beta 1.2: 2.44 * P * R / (R + 1.44 * P).
    p, r = 5 / 6, 1.0
    expected = 2.44 * p * r / (r + 1.44 * p)
    assert rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(expected)
    assert rouge_l("x y", "a b") == 0.0


def test_cider_d_by_hand() -> None:
    # Two references "a b" and "c d": every n-gram has document frequency 1, idf ln 2. An
    # exact copy scores similarity 1 for n = 1 and 2 and nothing for n = 3, 4 (no such
    # n-grams): (1 + 1 + 0 + 0) / 4 * 10 = 5. No overlap scores 0.
    assert cider_d_scores(["a b", "x y"], ["a b", "c d"]) == pytest.approx([5.0, 0.0])
    # "a b a b" against "a b": unigram weights clipped at the reference's, similarity
    # 2 (ln 2)^2 / (2 sqrt 2 ln 2 * sqrt 2 ln 2) = 1/2; bigrams "a b" x2 and "b a" against
    # "a b": 1/sqrt(5); length difference 2: penalty exp(-4 / 72).
    expected = math.exp(-4 / 72) * (0.5 + 1 / math.sqrt(5)) / 4 * 10
    assert cider_d_scores(["a b a b", "x y"], ["a b", "c d"])[0] == pytest.approx(expected)
