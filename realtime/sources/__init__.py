"""Frame sources: webcam, video, image folders, RealSense, Kinect-class sensors, RGB-D folders, the embedded sample."""
