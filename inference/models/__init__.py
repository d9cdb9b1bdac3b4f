"""Network definitions shared by the node (inference) and the training program.

Training fits these classes; the node loads them from a model package. Nothing here imports
the training code.
"""

from inference.models.config import (
    DualEncoderConfig,
    ImageEncoderConfig,
    ModelConfigError,
    TextEncoderConfig,
)
from inference.models.dual_encoder import DualEncoder
from inference.models.tokenizer import TextTokenizer, TokenBatch, TokenizerError

__all__ = [
    "DualEncoder",
    "DualEncoderConfig",
    "ImageEncoderConfig",
    "ModelConfigError",
    "TextEncoderConfig",
    "TextTokenizer",
    "TokenBatch",
    "TokenizerError",
]
