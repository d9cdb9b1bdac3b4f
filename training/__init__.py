"""Offline training: archive readers, datasets, fitting, evaluation, model packages."""
