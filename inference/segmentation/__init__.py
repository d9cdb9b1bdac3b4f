"""CT organ segmentation: the network, its preprocessing, sliding-window inference, the label
map put back on the source grid, and the package loader.

Public API: :class:`SegmentationModelConfig`, :func:`segment_volume` and
:func:`load_segmentation_package` (see :mod:`inference.pipelines.segmentation` for the node's
pipeline). Training (``training/segmentation``) imports this package, never the reverse.
"""
