"""The decoder's tokenizer: any ``tokenizers`` JSON file with named start, end and padding
tokens (the WordPiece vocabulary built from the training text, or a language model's own)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from inference.models.tokenizer import TokenBatch, TokenizerError


class DecoderTokenizer:
    """Texts to ``start ... end`` id batches (right-padded, truncated), and ids back to text."""

    def __init__(self, tokenizer: object, bos: str, eos: str, pad: str, max_length: int) -> None:
        from tokenizers import Tokenizer

        if not isinstance(tokenizer, Tokenizer):
            raise TypeError("DecoderTokenizer wraps a tokenizers.Tokenizer")
        ids = {}
        for role, token in (("start", bos), ("end", eos), ("padding", pad)):
            found = tokenizer.token_to_id(token)
            if found is None:
                raise TokenizerError(f"the decoder tokenizer has no {role} token {token!r}")
            ids[role] = int(found)
        self._tok = tokenizer
        self.bos_id, self.eos_id, self.pad_id = ids["start"], ids["end"], ids["padding"]
        self.max_length = max_length
        self._tok.no_truncation()
        self._tok.no_padding()

    @classmethod
    def from_file(
        cls, path: str | Path, bos: str, eos: str, pad: str, max_length: int
    ) -> DecoderTokenizer:
        from tokenizers import Tokenizer

        file = Path(path)
        try:
            tok = Tokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises its own Exception subclass
            raise TokenizerError(f"cannot read tokenizer {str(file)!r}: {exc}") from exc
        return cls(tok, bos, eos, pad, max_length)

    @property
    def suppressed_ids(self) -> list[int]:
        """Special tokens other than the end token: never generated (they decode to
        nothing, so a text of them would be empty)."""
        specials = {
            int(i) for i, token in self._tok.get_added_tokens_decoder().items() if token.special
        }
        return sorted(specials - {self.eos_id})

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size())

    def save(self, path: str | Path) -> None:
        self._tok.save(str(path))

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        if not texts:
            raise ValueError("no texts to tokenize")
        body = self.max_length - 2
        rows = [
            [self.bos_id, *e.ids[:body], self.eos_id]
            for e in self._tok.encode_batch(list(texts), add_special_tokens=False)
        ]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return TokenBatch(input_ids=ids, attention_mask=mask)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of generated ids, up to the first end token, special tokens left out."""
        out: list[int] = []
        for i in ids:
            if i == self.eos_id:
                break
            out.append(int(i))
        return str(self._tok.decode(out, skip_special_tokens=True))
