"""The model card of an impression package (MODEL_CARD.md, documentation: not hashed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.archive import detect_layout, is_dicom_archive
from training.evaluate.card import write_card
from training.impression.config import ImpressionTrainConfig

IU_XRAY_LICENCE = (
    "Indiana University chest X-ray reports, Open-i (U.S. National Library of Medicine)"
)


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def write_impression_card(
    package: Path, results: dict[str, Any], config: ImpressionTrainConfig, replicates: int
) -> Path:
    from training.impression.workflow import result_lines

    manifest = json.loads((package / "package.json").read_text(encoding="utf-8"))
    info = manifest["extra"]["training"]
    if is_dicom_archive(config.data.archive):
        layout_name, licence = "DICOM studies + reports", "as stated by the archive's owner"
    else:
        layout = detect_layout(config.data.archive)
        layout_name, licence = layout.name, layout.licence
    m = config.model
    d = m.decoder
    extra = [p.name for p in config.data.extra_text]
    text = results["text"]
    diff = text["generator_minus_retrieval"]
    met = all(diff[k]["value"] > 0 for k in ("rouge_l", "cider_d"))
    sure = [k for k in ("rouge_l", "cider_d") if diff[k]["ci_low"] > 0]
    names = {"rouge_l": "ROUGE-L", "cider_d": "CIDEr-D"}
    decoder_desc = (
        f"GPT-2 decoder built from configuration ({d.num_layers} layers, width "
        f"{d.hidden_size}, {d.num_heads} heads) with cross-attention in every block to the "
        "image tokens (CvT2DistilGPT2's recipe); WordPiece vocabulary of "
        f"{d.vocab_size} built from the training targets"
        if d.kind == "gpt2"
        else f"a query transformer ({d.num_queries} queries, {d.qformer_layers} layers) into "
        f"the frozen language model `{d.language_model}`"
        if d.kind == "qformer"
        else "none: the package answers with the retrieved training text"
    )
    examples = [
        "| image | truth | generated | retrieved (baseline) |",
        "|---|---|---|---|",
        *(
            f"| `{Path(e['image']).name}` | {_cell(e['truth'])} | {_cell(e['generated'])} "
            f"| {_cell(e['retrieved'])} |"
            for e in results.get("examples", [])
        ),
    ]
    parts: list[tuple[str, list[str]]] = [
        (
            "Intended use",
            [
                "Research and development of the vlnode impression pipeline: a short "
                "description in words of a key image (CT/MR), written into the SR's impression "
                "text item with this package's name, version and hash. Not a radiology report.",
            ],
        ),
        (
            "Training data",
            [
                f"- Archive: `{layout_name}` layout, split `{info['train_split']}` "
                f"({info['train_records']} images with a target text).",
                f"- Licence of the data: {licence}.",
                f"- Target text: the section(s) {info['target_sections']} of each image.",
                (
                    f"- Text-only reports for the decoder's warm start and vocabulary: "
                    f"{', '.join(extra)} ({IU_XRAY_LICENCE})."
                    if extra
                    else "- No text-only reports (the warm start was off)."
                ),
                "- The archive's label columns are never used in training; the labeller's "
                "clinical check below reads free text only.",
            ],
        ),
        (
            "Model",
            [
                f"- Image encoder: MONAI ResNet (input {'x'.join(map(str, m.image.image_size))}, "
                f"widths {list(m.image.widths)}), initialised from "
                f"`{info['image_encoder']['findings_package']}` member "
                f"{info['image_encoder']['member']}, "
                + ("fine-tuned." if info["image_encoder"]["trained"] else "frozen.")
                if info["image_encoder"]["findings_package"]
                else "- Image encoder: MONAI ResNet trained from scratch.",
                f"- Conditioning: {m.features} features (the last feature grid, one token per "
                "cell with a learned position, plus the pooled feature).",
                f"- Decoder: {decoder_desc}.",
                f"- Generation: beam search ({m.generation.beam_size} beams), "
                f"{m.generation.min_new_tokens} to {m.generation.max_new_tokens} tokens, no "
                f"repeated {m.generation.no_repeat_ngram_size}-grams; the output is cleaned into "
                "sentences and an empty one is refused (an error, never an empty text).",
                "- Retrieval baseline and fallback: the training text of the nearest training "
                "image by cosine similarity of the pooled image feature (bank in "
                "`retrieval.safetensors` / `retrieval.json`).",
                f"- Content hash: `{manifest['content_hash']}`.",
            ],
        ),
        (
            "Training",
            [
                f"- Command: `vlnode train --config {_config_path(info['config'])}` (seed "
                f"{info['seed']}, {info['epochs']} epochs, {info['seconds']:.0f} s of training "
                "on the machine that trained it).",
                "- Teacher-forced next-token cross-entropy, AdamW, warm-up then cosine decay; "
                "the weights after the last epoch (no selection on dev). Stored as float16.",
                "- Not run on a GPU: the `base` preset (conf/impression/presets/base.toml) is "
                "written for one, but no GPU was lent when this package was made.",
            ],
        ),
        (
            f"Evaluation on `{info['dev_split']}`",
            [
                f"Intervals: 95% percentile bootstrap over cases, {replicates} replicates; the "
                "differences are paired (the same resampled cases for both systems).",
                "",
                *result_lines(results)[1:],
                "",
                "Acceptance (ROUGE-L and CIDEr-D of the generator above the retrieval "
                "baseline's): "
                + ("met" if met else "NOT met")
                + " on the point estimates; the paired interval excludes 0 for "
                + (", ".join(names[k] for k in sure) if sure else "neither")
                + ".",
            ],
        ),
        ("Examples (dev images evenly spaced in the split, not chosen)", examples),
        ("Notes", [f"- {n}" for n in config.card_notes] or ["None."]),
        (
            "Limitations",
            [
                "- A few hundred teaching-file cases; the model learns the captions' style and "
                "frequent phrases, not a reading of the image. Laterality and specific findings "
                "are often wrong.",
                "- The labeller is a word-rule check (negation and hedges by cue words), not a "
                "clinical judgement.",
            ],
        ),
    ]
    return write_card(
        package, {"name": manifest["name"], "version": manifest["version"], "parts": parts}
    )


def _config_path(path: str) -> str:
    p = Path(path)
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return p.name
