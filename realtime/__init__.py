"""facenormals.realtime: live sources (webcams, files, RGB-D sensors), the run builder (``runner``: backend, detector,
post-inference stages, renderer, sinks), the threaded loop that runs the core's per-frame engine
(``facenormals.engine``) stage by stage, views (which only draw), sinks, and the ``run``/``bench`` commands."""
