"""facenormals.realtime"""
