# ruff: noqa  (measurement scripts kept as run: the realtime shim import must come first)
"""One side of lockstep.py: the engine (shipped fast-prior model, torch, one thread) on the sample clip, one frame
per line read from stdin; prints the frame's detect / crop / paste / render ms as JSON."""


def main() -> None:
    try:
        import use_worktree_realtime  # noqa: F401  (the side's own realtime/: see rt_shim/)
    except ImportError:
        pass
    import json
    import sys
    import time

    import torch

    torch.set_num_threads(1)
    from facenormals.engine import FrameEngine
    from facenormals.export.prepare import create_backend
    from facenormals.faces import create_detector
    from facenormals.frame import Frame
    from facenormals.realtime.pipeline import LoopStats
    from facenormals.realtime.render import FrameRenderer, RenderState
    from facenormals.realtime.sources.sample import render_sample_rgb

    engine = FrameEngine(create_backend("torch", "facenormals/weights/fast-prior.safetensors"), create_detector(1))
    renderer = FrameRenderer(RenderState(view="normals"), "torch")
    frames = [Frame(i, i * 33_333_333, render_sample_rgb(i)) for i in range(150)]
    print("ready", flush=True)
    for line in sys.stdin:
        f = frames[int(line)]
        faces, batch = engine.detect_and_crop(f)
        result = engine.paste(engine.infer(f, faces, batch))
        t0 = time.perf_counter(); renderer(result, LoopStats()); render = (time.perf_counter() - t0) * 1e3
        print(json.dumps({k: f.timings[k] for k in ("detect", "crop", "paste")} | {"render": render}), flush=True)


if __name__ == "__main__":
    main()
