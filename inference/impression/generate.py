"""Beam search with length limits, and the generated ids cleaned into sentences.

An impression is never empty: a generation that cleans to nothing raises
:class:`EmptyImpressionError` (evaluation fails loudly; the node reports the failure rather
than sending an empty text).
"""

from __future__ import annotations

import re
import warnings

import torch

from inference.impression.config import GenerationConfig
from inference.impression.model import ImpressionModel
from inference.impression.tokenizer import DecoderTokenizer

_SPACE_BEFORE = re.compile(r"\s+([.,;:!?%)])")
_SPACE_AFTER = re.compile(r"([(])\s+")
_HYPHEN = re.compile(r"(?<=\w)\s*-\s*(?=\w)")
_SLASH = re.compile(r"(?<=\w)\s*/\s*(?=\w)")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_REPEAT_PUNCT = re.compile(r"([.,;:])(\s*[.,;:])+")
# Written upper-case in reports; the WordPiece vocabulary is lower-case.
_ACRONYMS = re.compile(
    r"\b(ct|cta|mr|mri|mra|t1|t2|flair|dwi|adc|stir|iv|pet|us)\b", flags=re.IGNORECASE
)


class EmptyImpressionError(ValueError):
    """The generator produced no words for an image (the message names the image)."""


def clean_impression(text: str, source: str = "the image", finished: bool = True) -> str:
    """Word pieces joined back into sentences: punctuation attached, acronyms upper-case,
    each sentence starting with a capital and ending with a full stop. ``finished`` False
    (generation stopped at its length limit, not at the end token): a last sentence cut off
    mid-way is dropped when a complete one precedes it. Raises
    :class:`EmptyImpressionError` when no word is left."""
    out = " ".join(text.split())
    if not finished:
        cut = max(out.rfind(". "), out.rfind(" ."))
        if cut > 0 and any(c.isalnum() for c in out[:cut]):
            out = out[: cut + 1] if out[cut] == "." else out[: cut + 2]
    out = _SPACE_BEFORE.sub(r"\1", out)
    out = _SPACE_AFTER.sub(r"\1", out)
    out = _HYPHEN.sub("-", out)
    out = _SLASH.sub("/", out)
    out = _REPEAT_PUNCT.sub(r"\1", out).strip(" ,;:")
    if not any(c.isalnum() for c in out):
        raise EmptyImpressionError(f"the generated impression of {source} is empty")
    sentences = [s.strip() for s in _SENTENCE.split(out) if any(c.isalnum() for c in s)]
    fixed = []
    for s in sentences:
        s = _ACRONYMS.sub(lambda m: m.group(1).upper(), s)
        s = s[0].upper() + s[1:]
        fixed.append(s if s[-1] in ".!?" else s.rstrip(",;:") + ".")
    return " ".join(fixed)


@torch.no_grad()
def generate_ids(
    model: ImpressionModel,
    tokenizer: DecoderTokenizer,
    grid: torch.Tensor,
    pooled: torch.Tensor,
    generation: GenerationConfig | None = None,
) -> list[list[int]]:
    """Beam search from the start token; the new token ids of each image (end excluded)."""
    g = generation or model.config.generation
    tokens = model.condition(grid, pooled)
    batch = tokens.shape[0]
    options: dict[str, object] = {
        "num_beams": g.beam_size,
        "max_new_tokens": g.max_new_tokens,
        "min_new_tokens": g.min_new_tokens,
        "length_penalty": g.length_penalty,
        "no_repeat_ngram_size": g.no_repeat_ngram_size,
        "early_stopping": True,
        "do_sample": False,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.pad_id,
        "bos_token_id": tokenizer.bos_id,
    }
    if tokenizer.suppressed_ids:
        options["suppress_tokens"] = tokenizer.suppressed_ids
    start = torch.full((batch, 1), tokenizer.bos_id, dtype=torch.long, device=tokens.device)
    ones = torch.ones_like(start)
    if model.decoder is not None:
        out = model.decoder.generate(  # type: ignore[operator]
            input_ids=start, attention_mask=ones, encoder_hidden_states=tokens, **options
        )
        new = out[:, 1:]
    elif model.qformer is not None and model.language_model is not None:
        prefix = model.qformer(tokens)
        embed = model.language_model.get_input_embeddings()  # type: ignore[operator]
        inputs = torch.cat([prefix, embed(start)], dim=1)
        mask = torch.ones(inputs.shape[:2], dtype=torch.long, device=tokens.device)
        with warnings.catch_warnings():
            # The prompt is the image prefix (embeddings, no tokens): n-gram constraints on
            # the new tokens alone are what is meant, so transformers' notice is silenced.
            warnings.filterwarnings("ignore", message=".*with `inputs_embeds` and without")
            new = model.language_model.generate(  # type: ignore[operator]
                inputs_embeds=inputs, attention_mask=mask, **options
            )
    else:
        raise EmptyImpressionError("this impression model has no decoder (retrieval only)")
    rows = []
    for row in new.tolist():
        kept = []
        for i in row:
            if i == tokenizer.eos_id:
                break
            kept.append(int(i))
        rows.append(kept)
    return rows


def finished(ids: list[int], generation: GenerationConfig) -> bool:
    """Whether a generation ended at the end token rather than at the length limit."""
    return len(ids) < generation.max_new_tokens


def generate_texts(
    model: ImpressionModel,
    tokenizer: DecoderTokenizer,
    grid: torch.Tensor,
    pooled: torch.Tensor,
    sources: list[str] | None = None,
    generation: GenerationConfig | None = None,
) -> list[str]:
    """Generated impressions, cleaned; :class:`EmptyImpressionError` names an empty one."""
    names = sources or [f"image {i}" for i in range(grid.shape[0])]
    g = generation or model.config.generation
    ids = generate_ids(model, tokenizer, grid, pooled, g)
    return [
        clean_impression(tokenizer.decode(r), n, finished(r, g))
        for r, n in zip(ids, names, strict=True)
    ]
