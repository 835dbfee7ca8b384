"""The live loop's detect → infer hand-over (realtime/handover.py), on an injected clock: no wall-clock asserts."""

from __future__ import annotations

import threading

import pytest

from facenormals.realtime.handover import JustInTime, Stopped


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_idle_backend_lets_detection_start_at_once_and_only_one_frame_waits():
    handover = JustInTime(threading.Event(), Clock())
    assert handover.start_time() == float("-inf")
    handover.wait_turn()  # idle: returns at once
    assert handover.start_time() is None  # a frame is being detected: the next one waits for the backend to take it
    handover.detected(0.010)
    assert handover.start_time() is None
    handover.inference_started()
    assert handover.start_time() == pytest.approx(100.0 - 0.010)  # no inference time learnt yet: now


def test_detection_starts_one_detection_before_the_backend_is_expected_to_finish():
    clock = Clock()
    handover = JustInTime(threading.Event(), clock)
    for detect_s, infer_s in ((0.010, 0.060), (0.014, 0.050)):  # the shortest of each kept
        handover.wait_turn()
        handover.detected(detect_s)
        handover.inference_started()
        handover.inference_done(infer_s)
    assert handover.detect_s == pytest.approx(0.010) and handover.infer_s == pytest.approx(0.050)
    handover.wait_turn()
    handover.detected(0.012)
    clock.now = 200.0
    handover.inference_started()
    assert handover.start_time() == pytest.approx(200.0 + 0.050 - 0.010)
    handover.inference_done(0.050)
    assert handover.start_time() == float("-inf")


def test_a_frame_that_only_reuses_is_not_waited_for_and_does_not_teach_the_inference_time():
    """``--infer-every``: a frame whose faces all reuse an earlier inference takes ~1 ms; detection of the next frame
    may start at once, and the learnt inference time stays that of real backend calls."""
    clock = Clock()
    handover = JustInTime(threading.Event(), clock)
    handover.wait_turn()
    handover.detected(0.010)
    handover.inference_started()
    handover.inference_done(0.050)
    handover.wait_turn()
    handover.detected(0.010)
    handover.inference_started(network=False)
    assert handover.start_time() == pytest.approx(100.0 - 0.010)  # not 50 ms later
    handover.inference_done(0.001, network=False)
    assert handover.infer_s == pytest.approx(0.050)


def test_a_skipped_frame_frees_the_turn():
    handover = JustInTime(threading.Event(), Clock())
    handover.wait_turn()
    handover.skipped()
    assert handover.start_time() == float("-inf")


def test_stop_request_ends_a_wait():
    stop = threading.Event()
    handover = JustInTime(stop, Clock())
    handover.wait_turn()  # pending: the next wait would block until the backend takes the batch
    stop.set()
    with pytest.raises(Stopped):
        handover.wait_turn()


def test_the_lead_is_the_shortest_recent_detection_not_one_slowed_by_overlap():
    handover = JustInTime(threading.Event(), Clock(), window=3)
    for seconds in (0.010, 0.030, 0.025):  # the later two overlapped an inference
        handover.wait_turn()
        handover.detected(seconds)
        handover.skipped()
    assert handover.detect_s == pytest.approx(0.010)
    handover.wait_turn()
    handover.detected(0.020)  # the fast one has left the window
    assert handover.detect_s == pytest.approx(0.020)
