"""The pipelines: from a rebuilt image or volume to typed results (inference.results)."""
