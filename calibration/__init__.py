"""facenormals.calibration: camera intrinsics and distortion from board images, RGB-D extrinsics and depth scale,
and the calibration file the RGB-D sources read."""
