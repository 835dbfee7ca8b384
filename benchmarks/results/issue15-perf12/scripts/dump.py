# ruff: noqa  (measurement scripts kept as run: the realtime shim import must come first)
"""Dump what the optimisations must keep identical, from whichever facenormals PYTHONPATH gives.

python dump.py OUTDIR [val_limit]
* sample clip (150 frames, engine detect_and_crop with the shipped ict-blend prior model's settings, warm starts):
  landmarks, raw landmarks, depth, crop matrices, crop masks, the 7-channel network input; the pasted normals of
  the prior's normals channels (as a stand-in network output) and the rendered normals view of them;
* stored validation landmarks (val_ict_v2, val_ict_v5, val_james, val_profile): stored_prior for ict-blend (all
  samples) and mediapipe-mesh / ict-fit (the first val_limit samples of each set).
"""


def main() -> None:
    try:
        import use_worktree_realtime  # noqa: F401  (the side's own realtime/: see rt_shim/)
    except ImportError:
        pass
    import glob
    import sys
    from pathlib import Path

    import numpy as np

    import facenormals
    from facenormals.engine import FrameEngine
    from facenormals.faces import create_detector
    from facenormals.frame import Frame
    from facenormals.prior import stored_prior
    from facenormals.realtime.sources.sample import render_sample_rgb

    out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    print("facenormals from", facenormals.__file__, flush=True)


    class FakeBackend:
        input_size = 256
        prior_source = "ict-blend"

        def __call__(self, x):
            return x[:, 3:6].copy()


    detector = create_detector(1)
    engine = FrameEngine(FakeBackend(), detector)
    from facenormals.realtime.pipeline import LoopStats
    from facenormals.realtime.render import FrameRenderer, RenderState

    renderer = FrameRenderer(RenderState(view="normals", show_hud=False), "x")
    rec = {k: [] for k in ("landmarks", "raw", "depth", "matrix", "mask", "inputs", "pasted", "valid", "region", "render", "nfaces")}
    for i in range(150):
        frame = Frame(i, i * 33_333_333, render_sample_rgb(i))
        faces, batch = engine.detect_and_crop(frame)
        rec["nfaces"].append(len(faces))
        if not faces:
            continue
        f, c = faces[0], batch.crops[0]
        rec["landmarks"].append(f.landmarks); rec["raw"].append(f.raw_landmarks); rec["depth"].append(f.depth)
        rec["matrix"].append(c.matrix); rec["mask"].append(c.mask); rec["inputs"].append(batch.inputs[0].copy())
        result = engine.paste(engine.infer(frame, faces, batch))
        p = result.pasted[0]
        pasted = np.full((480, 640, 3), np.nan, np.float32); valid = np.zeros((480, 640), bool)
        pasted[p.region] = p.normals; valid[p.region] = p.valid
        rec["pasted"].append(pasted); rec["valid"].append(valid); rec["region"].append([p.x0, p.y0, *p.valid.shape])
        rec["render"].append(renderer(result, LoopStats()).copy())
    np.savez(out / "sample.npz", **{k: np.stack(v) for k, v in rec.items()})
    print("sample frames with a face:", sum(rec["nfaces"]), flush=True)
    for root in sorted(glob.glob("/work/datasets/val_*")):
        names = [Path(p).stem for p in sorted(glob.glob(f"{root}/priors/*.npy"))]
        for source in ("ict-blend", "mediapipe-mesh", "ict-fit"):
            use = names if source == "ict-blend" else names[:limit]
            normals, coverage = zip(*(stored_prior(root, n, (256, 256, 3), source) for n in use))
            np.savez(out / f"{Path(root).name}_{source}.npz", normals=np.stack(normals), coverage=np.stack(coverage),
                     names=np.array(use))
            print(root, source, len(use), flush=True)


if __name__ == "__main__":
    main()
