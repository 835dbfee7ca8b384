"""The calibration file format (round trip, malformed files) and factory calibration read from recordings."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from facenormals.calibration.calibfile import (
    Calibration,
    CalibrationError,
    import_pyrealsense2,
    load_calibration,
    read_azure_kinect,
    read_realsense,
    save_calibration,
)
from facenormals.camera import Intrinsics
from facenormals.cli import main as cli_main

COLOUR = Intrinsics(128, 96, 100.0, 101.0, 63.7, 48.2, (0.1, -0.05, 0.001, 0.002, 0.01))
DEPTH = Intrinsics(64, 48, 50.0, 50.5, 31.7, 24.2)
ANGLE = 0.05
ROTATION = np.array([[1, 0, 0], [0, np.cos(ANGLE), -np.sin(ANGLE)], [0, np.sin(ANGLE), np.cos(ANGLE)]])
TRANSLATION = np.array([0.015, 0.001, -0.002])
DEPTH_UNITS = 0.0001


def full_calibration() -> Calibration:
    return Calibration(COLOUR, DEPTH, ROTATION, TRANSLATION, 0.001, "test", {"rms_px": 0.2})


def test_round_trip(tmp_path):
    path = tmp_path / "calib.json"
    save_calibration(path, full_calibration())
    loaded = load_calibration(path)
    assert loaded.colour == COLOUR and loaded.depth == DEPTH
    assert np.allclose(loaded.rotation, ROTATION) and np.allclose(loaded.translation_m, TRANSLATION)
    assert loaded.depth_scale_m == 0.001 and loaded.has_depth and loaded.quality == {"rms_px": 0.2}
    colour_only = tmp_path / "colour.json"
    save_calibration(colour_only, Calibration(COLOUR))
    assert not load_calibration(colour_only).has_depth


def _variant(tmp_path: Path, edit) -> Path:
    document = full_calibration().to_json()
    edit(document)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(format="other"), "'format'"),
    (lambda d: d.update(version=99), "unsupported 'version' 99"),
    (lambda d: d.pop("colour"), "missing 'colour'"),
    (lambda d: d["colour"].pop("fx"), "'colour' is missing fx"),
    (lambda d: d["colour"].update(fx=-3), "focal lengths must be positive"),
    (lambda d: d["colour"].update(width=12.5), "'colour'.width must be a positive integer"),
    (lambda d: d["colour"].update(cx=1e6), "principal point"),
    (lambda d: d["depth"].update(distortion=[0.1, 0.2, 0.3]), "'depth'.distortion has 3 coefficients"),
    (lambda d: d["depth"].update(fy="fast"), "'depth'.fy must be a finite number"),
    (lambda d: d["depth_to_colour"].update(rotation=[[2, 0, 0], [0, 1, 0], [0, 0, 1]]), "not a rotation"),
    (lambda d: d["depth_to_colour"].update(translation_m=[15.0, 1.0, -2.0]), "millimetres given"),
    (lambda d: d["depth_to_colour"].update(translation_m=[1, 2]), "3 finite numbers"),
    (lambda d: d.update(depth_scale_m=0), "'depth_scale_m'"),
    (lambda d: d.update(depth_scale_m=None), "needs 'depth_to_colour' and 'depth_scale_m'"),
])
def test_malformed_files_name_the_field(tmp_path, edit, message):
    path = _variant(tmp_path, edit)
    with pytest.raises(CalibrationError, match=message) as err:
        load_calibration(path)
    assert str(path) in str(err.value)


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(CalibrationError, match="not found"):
        load_calibration(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        load_calibration(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(CalibrationError, match="JSON object"):
        load_calibration(listed)


def test_save_refuses_invalid_calibration(tmp_path):
    bad = Calibration(Intrinsics(64, 48, -1.0, 50.0, 32.0, 24.0))
    with pytest.raises(CalibrationError, match="focal"):
        save_calibration(tmp_path / "x.json", bad)
    assert not (tmp_path / "x.json").exists()


# ---------------------------------------------------------------------------------------------- RealSense


def record_realsense(path: Path, frames: int = 3) -> Path:
    """A real .db3 written by librealsense: a software device with colour + depth streams and known calibration."""
    rs = import_pyrealsense2()

    def rs_intrinsics(intr: Intrinsics):
        out = rs.intrinsics()
        out.width, out.height, out.fx, out.fy, out.ppx, out.ppy = intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy
        out.model = rs.distortion.brown_conrady
        out.coeffs = list(intr.distortion) or [0.0] * 5
        return out

    def stream(kind, fmt, bpp: int, intr: Intrinsics, uid: int):
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.fps, vs.bpp, vs.fmt = kind, 0, uid, 30, bpp, fmt
        vs.width, vs.height = intr.width, intr.height
        vs.intrinsics = rs_intrinsics(intr)
        return vs

    device = rs.software_device()
    depth_sensor, colour_sensor = device.add_sensor("Depth"), device.add_sensor("Color")
    depth_profile = depth_sensor.add_video_stream(stream(rs.stream.depth, rs.format.z16, 2, DEPTH, 0))
    colour_profile = colour_sensor.add_video_stream(stream(rs.stream.color, rs.format.rgb8, 3, COLOUR, 1))
    depth_sensor.add_read_only_option(rs.option.depth_units, DEPTH_UNITS)
    extrinsics = rs.extrinsics()
    extrinsics.rotation = list(ROTATION.T.ravel())  # librealsense stores it column-major
    extrinsics.translation = list(TRANSLATION)
    depth_profile.register_extrinsics_to(colour_profile, extrinsics)
    recorder = rs.recorder(str(path), device)
    depth_sensor.open(depth_profile)
    colour_sensor.open(colour_profile)
    sink = rs.syncer()
    depth_sensor.start(sink)
    colour_sensor.start(sink)
    for index in range(frames):
        for sensor, profile, bpp, data in (
            (depth_sensor, depth_profile, 2, np.full((DEPTH.height, DEPTH.width), 5000 + index, np.uint16)),
            (colour_sensor, colour_profile, 3, np.full((COLOUR.height, COLOUR.width, 3), 90, np.uint8)),
        ):
            frame = rs.software_video_frame()
            frame.pixels, frame.stride, frame.bpp = data, data.shape[1] * bpp, bpp
            frame.timestamp, frame.frame_number = index * 33.3, index
            frame.domain = rs.timestamp_domain.hardware_clock
            frame.profile = profile.as_video_stream_profile()
            sensor.on_video_frame(frame)
        time.sleep(0.01)
    for sensor in (depth_sensor, colour_sensor):
        sensor.stop()
        sensor.close()
    del recorder  # flushes and closes the file
    return path


def needs_pyrealsense2() -> None:
    try:
        import_pyrealsense2()
    except CalibrationError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def realsense_recording(tmp_path_factory) -> Path:
    needs_pyrealsense2()
    return record_realsense(tmp_path_factory.mktemp("rs") / "calib.db3")


@pytest.mark.realsense
def test_realsense_recording_calibration(realsense_recording):
    calib = read_realsense(recording=realsense_recording)
    assert calib.colour.width == COLOUR.width and calib.colour.fx == pytest.approx(COLOUR.fx)
    assert calib.colour.distortion == pytest.approx(COLOUR.distortion, abs=1e-6)
    assert calib.depth == Intrinsics(DEPTH.width, DEPTH.height, pytest.approx(DEPTH.fx), pytest.approx(DEPTH.fy),
                                     pytest.approx(DEPTH.cx), pytest.approx(DEPTH.cy))
    assert np.allclose(calib.rotation, ROTATION, atol=1e-6) and np.allclose(calib.translation_m, TRANSLATION, atol=1e-6)
    assert calib.depth_scale_m == pytest.approx(DEPTH_UNITS)


@pytest.mark.realsense
def test_calibrate_rgbd_cli_from_recording(realsense_recording, tmp_path, capsys):
    out = tmp_path / "rs.json"
    assert cli_main(["calibrate", "rgbd", "--recording", str(realsense_recording), "--out", str(out)]) == 0
    assert "depth scale: 0.0001 m/unit" in capsys.readouterr().out
    assert load_calibration(out).has_depth


@pytest.mark.realsense
def test_realsense_bad_recording(tmp_path):
    needs_pyrealsense2()
    with pytest.raises(CalibrationError, match="not found"):
        read_realsense(recording=tmp_path / "missing.db3")
    junk = tmp_path / "junk.db3"
    junk.write_bytes(b"not a recording")
    with pytest.raises(CalibrationError, match="could not open"):
        read_realsense(recording=junk)


def test_kinect_without_pyk4a_is_a_clear_error():
    try:
        import pyk4a  # noqa: F401
    except ImportError:
        with pytest.raises(CalibrationError, match="pyk4a"):
            read_azure_kinect(recording="any.mkv")
    else:
        pytest.skip("pyk4a installed: the missing-package message does not apply")


def test_apply_to_frame_aligns_depth_and_sets_intrinsics():
    from facenormals.calibration.calibfile import apply_to_frame
    from facenormals.frame import Frame

    colour = Intrinsics(64, 48, 60.0, 60.0, 31.5, 23.5)
    depth_cam = Intrinsics(32, 24, 30.0, 30.0, 15.5, 11.5)
    calib = Calibration(colour, depth_cam, np.eye(3), np.zeros(3), 0.001, "test")
    frame = Frame(0, 0, np.zeros((48, 64, 3), np.uint8), np.full((24, 32), 700, np.uint16), None, None)
    out = apply_to_frame(frame, calib)
    assert out.intrinsics == colour and out.depth.shape == (48, 64) and out.depth_scale_m == 0.001
    assert (out.depth[4:-4, 4:-4] == 700).all()  # upsampled 2× with the cracks closed
    with pytest.raises(CalibrationError, match="64×48 colour images"):
        apply_to_frame(Frame(1, 0, np.zeros((10, 10, 3), np.uint8)), calib)
