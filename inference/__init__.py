"""Model library and inference path: volume rebuild, networks, pipelines, DICOM outputs."""
