"""Azure Kinect source: pyk4a is an optional extra that needs Microsoft's SDK, absent on CI."""

from __future__ import annotations

import importlib.util

import pytest

from facenormals.realtime.sources.base import SourceError, open_source

HAVE_PYK4A = importlib.util.find_spec("pyk4a") is not None


@pytest.mark.skipif(HAVE_PYK4A, reason="pyk4a is installed: the missing-extra message cannot be observed")
def test_missing_extra_names_the_install_command(tmp_path):
    recording = tmp_path / "take.mkv"
    recording.write_bytes(b"\x1a\x45\xdf\xa3")  # an EBML header start: the file exists, pyk4a is what is missing
    for spec in ("kinect", "kinect:0", f"kinect:{recording}"):
        with pytest.raises(SourceError, match=r"facenormals\[kinect\]"):
            open_source(spec)


@pytest.mark.skipif(not HAVE_PYK4A, reason="pyk4a (extra 'kinect') and the Azure Kinect SDK are not installed")
def test_missing_recording_is_named(tmp_path):
    with pytest.raises(SourceError, match=r"nope\.mkv"):
        open_source(f"kinect:{tmp_path / 'nope.mkv'}")

