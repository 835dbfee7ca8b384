"""facenormals.benchmarks: reported figures for speed goals (never asserted in tests)."""
