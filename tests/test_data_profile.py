"""Profile validation sets (issue 14): `facenormals data render --yaw-deg LO HI` renders the yaw range it claims.

The pose law is checked on many draws (no data needed); the CLI renders real ICT faces (needs ../shared) and the
yaw_deg column of params.csv — read back from the rendered rotation — must lie in the asked range, both signs.
"""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest

from facenormals.training.data import cli as data_cli
from facenormals.training.data.synth import RenderSettings, euler_yaw_pitch_roll, yaw_pose
from tests.media import render_ict_profiles


def test_yaw_pose_draws_the_claimed_range_with_small_pitch_and_roll():
    rng = np.random.default_rng(5)
    angles = []
    for _ in range(2000):
        axis, angle, rot = yaw_pose(rng, np.radians(50), np.radians(90))
        assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(rot), 1.0)
        # the (axis, angle) it reports is the same rotation
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], np.float64)
        rodrigues = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
        assert np.allclose(rodrigues, rot, atol=1e-5)
        angles.append(euler_yaw_pitch_roll(rot))
    yaw, pitch, roll = np.array(angles).T
    assert np.abs(yaw).min() >= 50.0 - 1e-6 and np.abs(yaw).max() <= 90.0 + 1e-6
    assert 0.4 < np.mean(yaw > 0) < 0.6  # both sides
    counts, _ = np.histogram(np.abs(yaw), bins=4, range=(50, 90))
    assert counts.min() > 0.2 * len(yaw)  # uniform in |yaw|: each 10° bin holds ~25 %
    assert np.abs(pitch).max() <= 15.0 + 1e-6 and np.abs(roll).max() <= 15.0 + 1e-6
    assert 3.0 < np.std(pitch) < 8.0 and 3.0 < np.std(roll) < 8.0


def test_yaw_range_is_checked():
    with pytest.raises(ValueError, match="yaw_range"):
        RenderSettings(yaw_range=(np.radians(60), np.radians(50)))
    with pytest.raises(ValueError, match="yaw_range"):
        RenderSettings(yaw_range=(0.0, np.radians(120)))
    parser = argparse.ArgumentParser()
    data_cli.add_arguments(parser)
    args = parser.parse_args(["render", "--count", "1", "--out", "unused", "--yaw-deg", "50", "95"])
    with pytest.raises(ValueError, match="--yaw-deg"):
        data_cli.main(args)


@pytest.mark.shared
def test_render_cli_profile_set_has_the_claimed_yaw(shared_data, tmp_path):
    out = render_ict_profiles(shared_data, tmp_path / "val_profile", count=8, seed=2000, size=64, yaw_deg=(50, 90))
    with (out / "params.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8  # no profile was rejected (its face mask still covers the crop)
    yaw = np.array([float(r["yaw_deg"]) for r in rows])
    assert np.all((np.abs(yaw) >= 50.0) & (np.abs(yaw) <= 90.0)), yaw
    assert (yaw > 0).any() and (yaw < 0).any()
    assert all(abs(float(r["pitch_deg"])) <= 15.0 and abs(float(r["roll_deg"])) <= 15.0 for r in rows)
