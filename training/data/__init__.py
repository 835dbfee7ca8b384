"""The data engine: renders paired / normal-only samples from 3-D faces and crops real photos into image-only ones.

Entry point: ``facenormals data render|photos`` (:mod:`facenormals.training.data.cli`).
"""
