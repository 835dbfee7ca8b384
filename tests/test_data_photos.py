"""Real photos/videos → image-only samples, with real MediaPipe; bad inputs are counted, never fatal."""

from __future__ import annotations

import argparse
import json
import shutil

import cv2
import numpy as np
import pytest

from facenormals.dataset import SampleKind, load_sample, scan_dataset
from facenormals.fileio import DataError
from facenormals.geometry import CROP_SCALE
from facenormals.training.data import cli as data_cli
from facenormals.training.data.photos import iter_frames
from facenormals.training.data.photos_job import crop_photos


def _photos(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    data_cli.add_arguments(parser)
    return data_cli.main(parser.parse_args(["photos", *argv]))


@pytest.mark.shared
def test_photo_faces_become_image_only_samples_and_resume(shared_data, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(shared_data / "photos" / "obama.jpg", src)
    shutil.copy(shared_data / "photos" / "two_people.jpg", src)
    out = tmp_path / "out"
    report = crop_photos([src], out)
    assert report.written == 3 and report.failed == 0  # 1 + 2 faces
    samples = scan_dataset(out)
    assert {s.name for s in samples} == {"obama_f0", "two_people_f0", "two_people_f1"}
    for files in samples:
        sample = load_sample(files)
        assert sample.kind is SampleKind.IMAGE_ONLY and sample.image.shape == (256, 256, 3)
        # the paper's crop: the landmarks' square fills 1/1.2 of the side, so the hull spans about that
        rows, cols = np.nonzero(sample.mask)
        span = max(np.ptp(rows), np.ptp(cols)) + 1
        assert span == pytest.approx(256 / CROP_SCALE, rel=0.03)
    assert all("video" not in json.loads((out / "params" / f"{s.name}.json").read_text()) for s in samples)
    again = crop_photos([src], out)
    assert again.written == 0 and again.existing == 2  # one per frame: the largest face marks it done


@pytest.mark.shared
def test_video_frames_are_sampled(shared_data, tmp_path):
    report = crop_photos([shared_data / "video" / "single_face.mp4"], tmp_path / "v", every=24)
    assert report.written == 3 and report.failed == 0  # frames 0, 24, 48 of 72
    assert sorted(s.name for s in scan_dataset(tmp_path / "v")) == [
        "single_face_f00000_f0", "single_face_f00024_f0", "single_face_f00048_f0"]
    # the frames name their video: one clip of one face (training/landmark_identity.py groups them so)
    params = [json.loads(p.read_text()) for p in sorted((tmp_path / "v" / "params").glob("*.json"))]
    assert [(p["video"], p["face"]) for p in params] == [("single_face", 0)] * 3


def test_photos_without_faces_and_broken_files_are_counted(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(src / "noise.png"), rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    (src / "broken.jpg").write_bytes(b"not a jpeg at all")
    writer = cv2.VideoWriter(str(src / "wall.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for k in range(6):
        writer.write(np.full((48, 64, 3), 40 * k, np.uint8))
    writer.release()
    report = crop_photos([src], tmp_path / "out", every=2)
    assert report.written == 0
    assert report.failures["no face found"] == 1 + 3  # the noise photo, video frames 0, 2, 4
    assert any("broken.jpg" in msg for msg in report.failures)
    assert _photos("--in", str(src), "--out", str(tmp_path / "out2"), "--every", "2") == 1  # nothing written
    assert "skipped" in capsys.readouterr().out


def test_empty_or_missing_inputs_raise_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no photos or videos"):
        crop_photos([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(DataError, match="not found"):
        list(iter_frames(tmp_path / "missing.jpg"))
