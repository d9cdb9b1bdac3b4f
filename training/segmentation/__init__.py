"""Training of the CT organ segmentation model (issue 15): configuration, data, loop, evaluation,
model card and the workflow ``vlnode train`` / ``vlnode evaluate`` run."""
