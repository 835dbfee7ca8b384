"""facenormals.realtime: live sources (webcams, files, RGB-D sensors), the threaded loop that runs the core's
per-frame engine (``facenormals.engine``) stage by stage, views, sinks, and the ``run``/``bench`` commands."""
