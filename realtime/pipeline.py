"""The realtime loop: capture → detect → infer → render/sink, one thread per stage, bounded queues.

The per-frame work is :class:`facenormals.engine.FrameEngine`'s, the same as the API's: the detect thread runs
``detect_and_crop``, the infer thread ``infer``, the main thread ``paste`` then renders and writes. This module
only adds threads, queues, pacing, stop handling and the report.

* Live sources (cameras, or a file replayed at its frame rate with ``pace_fps``) use latest-frame
  queues of one slot: a stage that falls behind finds only the newest item; stale ones are dropped and
  counted, so latency stays bounded. File sources use blocking queues: every frame is processed.
* Live, the detect thread takes the newest frame just in time for the backend (``overlap=False``,
  :class:`~facenormals.realtime.handover.JustInTime`): when no detected batch waits and the running inference
  is about to end. A frame is dropped before any work on it, never after its detection and crop, and detection
  competes with the backend's threads for the cores only over the inference's last milliseconds. File sources
  detect whenever a frame is there (``overlap=True``): every frame, throughput.
* Frame ids and capture timestamps travel end to end; each stage adds its milliseconds to
  ``frame.timings`` and the last one adds ``total`` (capture → written).
* One stop :class:`threading.Event`. A stage exception stops every stage and is raised after the
  sinks are closed as :class:`PipelineError` naming the stage and frame id (a source failing
  mid-stream first lets the frames it already delivered through). SIGINT/SIGTERM and a
  sink's quit request stop the loop the same way; videos are finalised, the report is returned.

Render and sinks run on the calling (main) thread: GUI windows and signal handling both want it.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from facenormals.engine import FrameEngine, FrameResult
from facenormals.faces import Detector, FrameError
from facenormals.frame import Frame
from facenormals.realtime.handover import JustInTime
from facenormals.realtime.handover import Stopped as _Stopped  # a stage waited when the stop event was set
from facenormals.reuse import ReusePolicy

log = logging.getLogger(__name__)

STAGES = ("capture", "detect", "infer", "render", "sink")
_POLL_S = 0.1  # safety net only: waits are woken by notify; this bounds a missed wake-up
# Live: how long the infer thread lets the main thread take the previous result before replacing it. A frame that
# reuses an earlier inference (facenormals.reuse) is done ~1 ms after the inferred frame before it, less than the
# main thread may need to get the GIL back (a 5 ms switch interval) and take it: without this wait that inference's
# own frame was dropped (17 of 300 frames on the sample). About one frame's paste and render, so latency stays bounded.
_RESULT_HANDOFF_S = 0.010


class PipelineError(RuntimeError):
    """A stage failed: which stage, on which frame, and the original exception (``__cause__``)."""

    def __init__(self, stage: str, frame_id: int | None, cause: BaseException) -> None:
        where = f"frame {frame_id}" if frame_id is not None else "before the first frame"
        super().__init__(f"pipeline stage {stage!r} failed on {where}: {type(cause).__name__}: {cause}")
        self.stage, self.frame_id, self.cause = stage, frame_id, cause
        self.report: PipelineReport | None = None


class Sink(Protocol):
    def write(self, result: FrameResult, image: np.ndarray) -> None: ...

    def close(self) -> None: ...


Renderer = Callable[[FrameResult, "LoopStats"], np.ndarray]


_END = object()  # end-of-stream marker; never dropped


class StageQueue:
    """A bounded hand-over between two stages.

    ``latest=True``: a put into a full queue replaces the oldest waiting item (counted in ``dropped``),
    so the consumer always gets the newest frame. ``latest=False``: the producer waits (back-pressure).
    Both wake up and raise when the stop event is set.
    """

    def __init__(self, name: str, maxsize: int, latest: bool, stop: threading.Event) -> None:
        self.name, self.maxsize, self.latest = name, maxsize, latest
        self._stop = stop
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: Any) -> None:
        with self._cond:
            if item is _END:
                pass  # never dropped and never waits: the queue may hold one item more
            elif self.latest:
                while len(self._items) >= self.maxsize:
                    self._items.popleft()
                    self.dropped += 1
            else:
                while len(self._items) >= self.maxsize:
                    if self._stop.is_set():
                        raise _Stopped
                    self._cond.wait(_POLL_S)
            self._items.append(item)
            self._cond.notify_all()

    def put_when_taken(self, item: Any, wait_s: float) -> None:
        """``put``, first waiting up to ``wait_s`` for the consumer to take what the queue holds (a latest-frame
        queue would otherwise replace it)."""
        with self._cond:
            deadline = time.monotonic() + wait_s
            while self._items and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        self.put(item)

    def get(self) -> Any:
        with self._cond:
            while not self._items:
                if self._stop.is_set():
                    raise _Stopped
                self._cond.wait(_POLL_S)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


@dataclass
class LoopStats:
    """Running figures for the HUD: smoothed FPS, drop counts, the last deferred keyframe's network time."""

    fps: float = 0.0
    dropped: int = 0
    network_ms: float = 0.0  # deferred keyframes: the network ran after its frame, so no frame's timings show it
    frames: int = 0
    _last_ns: int | None = None

    def tick(self, now_ns: int) -> None:
        if self._last_ns is not None:
            dt = (now_ns - self._last_ns) * 1e-9
            if dt > 0:
                self.fps = 1.0 / dt if self.fps == 0 else 0.9 * self.fps + 0.1 / dt
        self._last_ns = now_ns
        self.frames += 1


@dataclass
class FrameRecord:
    """Per-frame measurements kept for the report and the benchmark."""

    id: int
    t_capture_ns: int
    t_done_ns: int
    faces: int
    timings: dict[str, float]


@dataclass
class PipelineReport:
    frames_in: int = 0
    frames_out: int = 0
    corrupt: int = 0
    unfinished: int = 0  # captured but still in flight when a stop request came: discarded
    dropped: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    stopped_by: str = "end"  # end | max-frames | signal | sink | error
    records: list[FrameRecord] = field(default_factory=list)
    error: str | None = None
    faces_inferred: int = 0  # faces sent to the network
    faces_reused: int = 0  # faces given an earlier inference's normals (facenormals.reuse)
    deferred_ms: list[float] = field(default_factory=list)  # deferred keyframe inferences (network, after the frame)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def fps(self) -> float:
        return self.frames_out / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self) -> str:
        return (f"{self.frames_out} frames in {self.duration_s:.1f} s ({self.fps:.1f} FPS), "
                f"{self.dropped_total} dropped, {self.corrupt} corrupt, {self.unfinished} unfinished, "
                f"stopped by {self.stopped_by}")


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


_QUEUED = "_queued_at_ms"  # when the frame entered its current queue (ms since capture); removed on the way out


def _age_ms(frame: Frame) -> float:
    return (time.monotonic_ns() - frame.t_capture_ns) * 1e-6


def _enqueued(frame: Frame) -> None:
    frame.timings[_QUEUED] = _age_ms(frame)


def _dequeued(frame: Frame, wait: str) -> None:
    """Record how long the frame waited in the queue it just left (``wait_detect``, ``wait_infer``, ``wait_render``)."""
    age = _age_ms(frame)
    frame.timings[wait] = max(0.0, age - frame.timings.pop(_QUEUED, age))


class Pipeline:
    """Wire a frame iterable, a detector, a backend, a renderer and sinks into the threaded loop.

    ``frames``: any iterable of :class:`Frame` (a Source). ``live``: latest-frame queues (True for
    cameras; defaults to ``source.live``). ``pace_fps``: replay a file at that rate as if live (frames
    restamped on release). ``max_frames``: stop after that many captured frames. ``on_result`` sees
    every finished result (the benchmark collects landmarks there). ``temporal``: a stage applied to each result
    right after inference, on the infer thread (:class:`facenormals.temporal.TemporalFilter`: ``run``/``bench``
    turn it on for video, ``--no-temporal`` off). ``fusion``: the RGB-D fusion stage
    (:class:`facenormals.fusion_stage.FusionStage`, keyed by track id), after the temporal filter on the same
    thread, so views only draw ``result.fusion``. ``overlap``: detect every frame as it comes, whatever the backend
    is doing (default: only for non-live runs; live runs detect just in time, see the module docstring).
    ``reuse``: the motion-adaptive inference rate (:class:`facenormals.reuse.ReusePolicy`; ``--infer-every``): a
    tracked face that barely moved since its last inference reuses it, carried into the new crop; None: every frame.
    ``defer_keyframes`` (default: live runs that reuse): a keyframe of a track that already has one is shown with
    the previous keyframe's output carried into its crop, and its own inference runs after the frame is handed to
    the main thread, for the frames after it (:meth:`FrameEngine.infer_deferred`): no frame waits for the network,
    and a keyframe's output is shown one frame later than it would be (``--sync-keyframes`` turns it off).
    """

    def __init__(self, frames: Iterable[Frame], detector: Detector, backend: Callable[[np.ndarray], np.ndarray],
                 renderer: Renderer, sinks: Iterable[Sink] = (), *, input_size: int | None = None,
                 live: bool | None = None, pace_fps: float | None = None, max_frames: int | None = None,
                 queue_size: int = 4, on_result: Callable[[FrameResult], None] | None = None,
                 handle_signals: bool = True, keep_records: int = 100_000,
                 temporal: Callable[[FrameResult], FrameResult] | None = None,
                 fusion: Callable[[FrameResult], FrameResult] | None = None, overlap: bool | None = None,
                 reuse: ReusePolicy | None = None, defer_keyframes: bool | None = None) -> None:
        self.frames = frames
        self.detector = detector
        self.backend = backend
        self.renderer = renderer
        self.sinks = list(sinks)
        self.live = bool(getattr(frames, "live", False)) if live is None else live
        if pace_fps is not None and pace_fps > 0:
            self.live = True
        self.pace_fps = pace_fps if pace_fps and pace_fps > 0 else None
        self.max_frames = max_frames
        self.on_result = on_result
        self.temporal = temporal
        self.stages = [stage for stage in (temporal, fusion) if stage is not None]  # after inference, in order
        self.handle_signals = handle_signals
        self.stop_event = threading.Event()
        qsize = 1 if self.live else queue_size
        self.queues = {name: StageQueue(name, qsize, self.live, self.stop_event)
                       for name in ("frames", "batches", "results")}
        self.overlap = not self.live if overlap is None else overlap
        self.handover = None if self.overlap else JustInTime(self.stop_event)
        # Batch buffers in flight: one per queue slot, plus those held by detect and infer.
        self.engine = FrameEngine(backend, detector, input_size, ring=qsize + 3, reuse=reuse)
        reusing = reuse is not None and reuse.active
        self.engine.defer_keyframes = (self.live and reusing) if defer_keyframes is None else (defer_keyframes and reusing)
        self.stats = LoopStats()
        self.report = PipelineReport()
        self._records: collections.deque[FrameRecord] = collections.deque(maxlen=keep_records)
        self._error: PipelineError | None = None
        self._error_lock = threading.Lock()
        self._stop_reason: str | None = None
        self._stage_now = "render"  # render or sink: which part of the main-thread stage is running

    @property
    def defer_keyframes(self) -> bool:
        """Whether keyframes are deferred (the engine's setting, decided once from ``live``, reuse and the option)."""
        return self.engine.defer_keyframes

    # -- control ------------------------------------------------------------------------------------------
    def stop(self, reason: str = "signal") -> None:
        """Ask every stage to finish (idempotent, thread-safe, callable from a signal handler)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self.stop_event.set()
        source_stop = getattr(self.frames, "stop", None)
        if callable(source_stop):
            source_stop()  # a source blocked in a device read ends after its current frame
        for q in self.queues.values():
            q.wake()
        if self.handover is not None:
            self.handover.wake()

    def _fail(self, stage: str, frame_id: int | None, err: BaseException, stop: bool = True) -> None:
        with self._error_lock:
            if self._error is None:
                error = PipelineError(stage, frame_id, err)
                error.__cause__ = err
                self._error = error
                log.error("%s", error)  # one line: the run ends with this message and a readable output
                log.debug("%s: traceback", error, exc_info=err)  # for a bug hunt: logging at DEBUG shows it
        if stop:
            self.stop("error")

    def _worker(self, stage: str, body: Callable[[list[int | None]], None]) -> threading.Thread:
        current: list[int | None] = [None]  # frame id being processed, for the error report

        def run() -> None:
            try:
                body(current)
            except _Stopped:
                pass
            except BaseException as err:  # every failure must stop the pipeline, with context
                self._fail(stage, current[0], err)

        return threading.Thread(target=run, name=f"facenormals-{stage}", daemon=True)

    # -- stages -------------------------------------------------------------------------------------------
    def _paced(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        """Release frames on a fixed clock, restamped at release (the moment a camera would deliver them)."""
        period_ns = int(1e9 / self.pace_fps) if self.pace_fps else 0
        start = time.monotonic_ns()
        for i in itertools.count():
            t0 = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                return
            frame.timings["capture"] = _ms_since(t0)  # reading only; the wait below is not capture work
            delay = start + i * period_ns - time.monotonic_ns()
            if delay > 0 and self.stop_event.wait(delay * 1e-9):
                return
            yield dataclasses.replace(frame, t_capture_ns=time.monotonic_ns())

    def _capture(self, current: list[int | None]) -> None:
        out = self.queues["frames"]
        frames: Iterator[Frame] = iter(self.frames)
        if self.pace_fps:
            frames = self._paced(frames)
        current[0] = 0  # a read failure is reported against the id the next frame would have had
        while not self.stop_event.is_set():
            if self.max_frames is not None and self.report.frames_in >= self.max_frames:
                self._stop_reason = self._stop_reason or "max-frames"
                break
            t0 = time.perf_counter()
            try:
                frame = next(frames, None)
            except Exception as err:
                # A source that dies mid-stream: finish the frames already captured, then report it.
                self._fail("capture", current[0], err, stop=False)
                break
            if frame is None:
                break
            frame.timings.setdefault("capture", _ms_since(t0))
            self.report.frames_in += 1
            current[0] = frame.id + 1
            _enqueued(frame)
            out.put(frame)
        out.put(_END)

    def _detect(self, current: list[int | None]) -> None:
        inq, out, handover = self.queues["frames"], self.queues["batches"], self.handover
        while True:
            if handover is not None:
                handover.wait_turn()
            frame = inq.get()  # the newest (live: older ones were dropped unprocessed)
            if frame is _END:
                out.put(_END)
                return
            current[0] = frame.id
            _dequeued(frame, "wait_detect")  # live: the just-in-time hand-over's wait, or a detection still running
            t0 = time.perf_counter()
            try:
                faces, batch = self.engine.detect_and_crop(frame)
            except FrameError as err:
                self.report.corrupt += 1
                log.warning("frame %d skipped: %s", frame.id, err)
                if handover is not None:
                    handover.skipped()
                continue
            if handover is not None:
                handover.detected(time.perf_counter() - t0)
            _enqueued(frame)
            out.put((frame, faces, batch))

    def _infer(self, current: list[int | None]) -> None:
        inq, out = self.queues["batches"], self.queues["results"]
        while True:
            item = inq.get()
            if item is _END:
                out.put(_END)
                return
            frame, faces, batch = item
            current[0] = frame.id
            _dequeued(frame, "wait_infer")  # a detected batch waiting for the backend
            handover = self.handover
            network = self.engine.expects_inference(batch)  # a frame that only reuses takes ~1 ms
            if handover is not None:
                handover.inference_started(network)
            t0 = time.perf_counter()
            result, deferred = self.engine.infer_deferred(frame, faces, batch)  # deferred: None unless deferring
            inferred_s = time.perf_counter() - t0
            if handover is not None and deferred is None:
                handover.inference_done(inferred_s, network)
            for stage in self.stages:
                result = stage(result)
            _enqueued(frame)
            if self.live:
                out.put_when_taken(result, _RESULT_HANDOFF_S)
            else:
                out.put(result)
            if deferred is not None:  # the frame is on its way; its keyframes' network serves the frames after it
                t1 = time.perf_counter()
                deferred()
                network_s = time.perf_counter() - t1
                self.report.deferred_ms.append(network_s * 1000.0)
                self.stats.network_ms = network_s * 1000.0
                if handover is not None:  # the backend's time, not the hand-over's wait in between
                    handover.inference_done(inferred_s + network_s, network)

    def _render_loop(self) -> None:
        inq = self.queues["results"]
        current: int | None = None
        try:
            while True:
                result = inq.get()
                if result is _END:
                    return
                current = result.frame.id
                self._finish(result)
                if any(getattr(sink, "wants_stop", False) for sink in self.sinks):
                    self.stop("sink")
                    return
        except _Stopped:
            return
        except KeyboardInterrupt:
            self.stop("signal")
        except Exception as err:  # reported as a stage failure with its frame id
            self._fail(self._stage_now, current, err)

    def _finish(self, result: FrameResult) -> None:
        frame = result.frame
        _dequeued(frame, "wait_render")  # a result waiting for the main thread
        self.engine.paste(result)
        t1 = time.perf_counter()
        self.stats.dropped = sum(q.dropped for q in self.queues.values())
        image = self.renderer(result, self.stats)
        t2 = time.perf_counter()
        frame.timings["render"] = (t2 - t1) * 1000.0
        self._stage_now = "sink"
        for sink in self.sinks:
            sink.write(result, image)
        self._stage_now = "render"
        frame.timings["sink"] = _ms_since(t2)
        done = time.monotonic_ns()
        frame.timings["total"] = (done - frame.t_capture_ns) * 1e-6
        self.stats.tick(done)
        self.report.frames_out += 1
        self._records.append(FrameRecord(frame.id, frame.t_capture_ns, done, len(result.faces), dict(frame.timings)))
        if self.on_result is not None:
            self.on_result(result)

    # -- run ----------------------------------------------------------------------------------------------
    def run(self) -> PipelineReport:
        """Run to the end of the stream, a stop request or an error; always closes the sinks.

        Returns the report; raises :class:`PipelineError` (with ``.report``) if a stage failed.
        """
        restore = self._install_signal_handlers()
        threads = [self._worker("capture", self._capture), self._worker("detect", self._detect),
                   self._worker("infer", self._infer)]
        start = time.perf_counter()
        try:
            for thread in threads:
                thread.start()
            self._render_loop()
        except KeyboardInterrupt:
            self.stop("signal")
        finally:
            self.stop(self._stop_reason or "end")
            for thread in threads:
                thread.join(timeout=5.0)
                if thread.is_alive():
                    log.warning("%s did not finish within 5 s (blocked in a device read?)", thread.name)
            self.report.duration_s = time.perf_counter() - start
            self._close_sinks()
            restore()
        self.report.stopped_by = "error" if self._error else (self._stop_reason or "end")
        self.report.dropped = {name: q.dropped for name, q in self.queues.items()}
        self.report.records = list(self._records)
        self.report.faces_inferred = self.engine.counts["inferred"]
        self.report.faces_reused = self.engine.counts["reused"]
        report = self.report
        report.unfinished = report.frames_in - report.frames_out - report.dropped_total - report.corrupt
        if self._error is not None:
            self.report.error = str(self._error)
            self._error.report = self.report
            raise self._error
        return self.report

    def _close_sinks(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as err:  # close the others; the first failure is reported
                if self._error is None:
                    self._error = PipelineError("sink", None, err)
                    self._error.__cause__ = err

    def _install_signal_handlers(self) -> Callable[[], None]:
        """SIGINT/SIGTERM → clean stop (main thread only; elsewhere signals are the caller's business)."""
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, _frame: object) -> None:
            log.info("signal %d: stopping", signum)
            self.stop("signal")

        for sig in previous:
            signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore
