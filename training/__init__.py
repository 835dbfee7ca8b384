"""facenormals.training: the data engine (synthetic renders, real-photo crops, priors), cross-modal training and
evaluation. Crops come from the core's face mesh and ``facenormals.geometry``, so training sees the live crops."""
