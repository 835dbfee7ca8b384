"""facenormals.export"""
