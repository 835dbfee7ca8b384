"""facenormals.benchmarks: the scripts behind the reported figures (speed, accuracy, fusion, stability) and the README
pictures; speed goals are reported here, never asserted in tests."""
