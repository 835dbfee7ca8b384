"""facenormals.calibration"""
