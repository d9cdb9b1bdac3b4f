"""Probe features: the encoder's output, or each ResNet stage's global average side by side."""

from __future__ import annotations

import pytest
import torch

from inference.models.config import ImageEncoderConfig
from training.evaluate.linear_probe import encoder_features, random_encoder

CONFIG = ImageEncoderConfig(image_size=(32, 32), widths=(4, 8, 12, 16), feature_dim=10)


def test_stage_features_are_the_pooled_stage_outputs() -> None:
    encoder = random_encoder(CONFIG, 0)
    images = torch.rand(5, 1, 32, 32) * 2 - 1
    final = encoder_features([encoder], images)
    stages = encoder_features([encoder], images, "stages")
    assert final.shape == (5, 10) and stages.shape == (5, 4 + 8 + 12 + 16)
    # The last stage's average is what the network's own head reads: its fc maps it to the
    # final features, so the hooks caught the right tensors.
    last = torch.from_numpy(stages[:, -16:]).float()
    with torch.no_grad():
        head = encoder.net.fc(last).double().numpy()
    assert head == pytest.approx(final, abs=1e-4)
    # Two encoders: their features side by side; a second call leaves no hook behind.
    both = encoder_features([encoder, random_encoder(CONFIG, 1)], images, "stages")
    assert both.shape == (5, 80) and both[:, :40] == pytest.approx(stages)


def test_unknown_feature_choice_is_refused() -> None:
    with pytest.raises(ValueError, match="probe features"):
        encoder_features([random_encoder(CONFIG, 0)], torch.zeros(1, 1, 32, 32), "pixels")
