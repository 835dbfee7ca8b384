"""The job behind ``facenormals data photos``: faces in photos/videos → image-only samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from facenormals.dataset import DatasetWriter
from facenormals.faces import FaceMesh
from facenormals.fileio import DataError
from facenormals.training.data.jobs import RunReport, write_params
from facenormals.training.data.photos import crop_faces, iter_frames


def crop_photos(inputs: list[Path], out: Path, every: int = 5, min_face_px: float = 40.0,
                size: int = 256) -> RunReport:
    """Crop every face (largest first, ``NAME_fK``) of every photo / sampled video frame; resumable.

    A frame whose samples all exist is skipped before detection. Unreadable files and frames without a
    face are counted, never fatal; a run that finds no input at all raises DataError.
    """
    if every < 1:
        raise ValueError(f"--every must be at least 1, got {every}")
    writer = DatasetWriter(out)
    report = RunReport()
    face_mesh = FaceMesh(max_faces=10)
    frames_seen = 0
    try:
        for source in inputs:
            for frame in tqdm(iter_frames(source, every), desc=f"photos {Path(source).name}", unit="frame"):
                if isinstance(frame, DataError):
                    report.failed += 1
                    report.failures[str(frame)] += 1
                    continue
                frames_seen += 1
                if writer.exists(f"{frame.name}_f0"):
                    report.existing += 1
                    continue
                faces = crop_faces(frame.rgb, face_mesh, size, min_face_px)
                if not faces:
                    report.failed += 1
                    report.failures["no face found"] += 1
                    continue
                # write the largest face last: its mask marks the whole frame as done
                for k in reversed(range(len(faces))):
                    image, mask, landmarks = faces[k]
                    name = f"{frame.name}_f{k}"
                    params = {"kind": "image-only", "source": "photo", "frame": frame.name, "face": k,
                              "face_height_px": round(float(np.ptp(landmarks[:, 1])), 1)}
                    if frame.video is not None:  # a video's frames are one clip (training/landmark_identity.py)
                        params["video"] = frame.video
                    write_params(out, name, params)
                    writer.write(name, mask, image=image)
                    report.written += 1
    finally:
        face_mesh.close()
    if frames_seen == 0 and report.failed == 0:
        raise DataError(f"no photos or video frames found in {', '.join(map(str, inputs))}")
    return report
