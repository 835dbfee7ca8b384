"""Frame sources: webcam, video, image folders, RealSense, Kinect-class sensors, RGB-D folders, the embedded sample.

``open_source(spec, **options)`` is the entry point (specs in :mod:`facenormals.realtime.sources.base`); each kind
lives in its own module and imports its SDK only when opened.
"""

from facenormals.realtime.sources.base import Source, SourceError, SourceInfo, open_source, parse_spec

__all__ = ["Source", "SourceError", "SourceInfo", "open_source", "parse_spec"]
