"""facenormals.training"""
