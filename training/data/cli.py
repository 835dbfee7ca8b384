"""``facenormals data render|photos``: build dataset folders from 3-D faces and from real photos/videos."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

DEFAULT_SHARED = Path(os.environ.get("FACENORMALS_SHARED", Path(__file__).resolve().parents[3] / "shared"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="render|photos|textures|prior")
    r = sub.add_parser("render", help="render paired (image + normals) or normal-only samples from 3-D faces")
    r.add_argument("--source", default="ict", help="'ict' (ICT-FaceKit random faces) or a folder/file of meshes")
    r.add_argument("--count", type=int, required=True, help="samples to produce (indices start..start+count-1)")
    r.add_argument("--out", type=Path, required=True, help="dataset folder (created; existing samples are kept)")
    r.add_argument("--seed", type=int, default=0, help="run seed; sample i uses the stream (seed, i)")
    r.add_argument("--kind", choices=("paired", "normal-only"), default="paired")
    r.add_argument("--start", type=int, default=0, help="first sample index")
    r.add_argument("--workers", type=int, default=2, help="processes (default 2: the machine's cores)")
    r.add_argument("--size", type=int, default=256)
    r.add_argument("--camera", choices=("mixed", "pinhole", "weak-perspective"), default="mixed")
    r.add_argument("--max-angle-deg", type=float, default=45.0, help="the paper: rotation angle in ±45°")
    r.add_argument("--hard-fraction", type=float, default=0.0,
                   help="share of samples with strong rotations (35–55°) and harsh side light (validation)")
    r.add_argument("--yaw-deg", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="profile poses: |yaw| uniform in [LO, HI] degrees (0 ≤ LO ≤ HI ≤ 90), random sign, pitch and "
                        "roll ~ N(0, 6°) within ±15°; replaces --max-angle-deg and the hard rotations (not the light)")
    r.add_argument("--profile-fraction", type=float, default=1.0,
                   help="with --yaw-deg: share of samples posed in that yaw range, the rest by the paper's protocol "
                        "(default 1: a profile set; e.g. 0.25 for a training set with a quarter beyond ±45°)")
    r.add_argument("--identity-scale", type=float, nargs="+", metavar="S", default=[1.0, 1.0],
                   help="ICT identity weights N(0, 1)·s: one value, or LO HI for s uniform per face (a scale mixture, "
                        "heavier-tailed than N(0, 1)); default 1 (the model's prior). Recorded in params.csv")
    r.add_argument("--detail-mm", type=float, default=0.0,
                   help="ICT faces: add a smooth displacement along the normals outside ICT's identity span "
                        "(wavelengths 15–60 mm, faded near eyes and mouth) with peak uniform in [0, MM]; default 0")
    r.add_argument("--mild-expressions", type=float, default=0.0, metavar="P",
                   help="ICT faces: share with near-neutral expressions (the random mix of ~8 expressions scaled by "
                        "U(0, 0.3)), as most real photos are; default 0. Recorded in params (expression_scale)")
    r.add_argument("--relief-deg", type=float, default=0.0,
                   help="ICT faces: fine skin relief below the mesh's resolution (wavelengths 4–16 mm) tilting the "
                        "normals of image and ground truth alike, RMS tilt uniform in [0, DEG] per face; default 0")
    r.add_argument("--backgrounds", nargs="*", type=Path, default=None,
                   help="photo/video files or folders to cut backgrounds from (default: ../shared/data/photos "
                        "and video when present; none given → procedural backgrounds only)")
    r.add_argument("--ict", type=Path, default=None, help="path of ict_facekit.npz (default: ../shared/data/...)")
    r.add_argument("--james", type=Path, default=None,
                   help="folder with james.obj/.jpg/.ljson: transfer its texture onto a share of ICT faces. "
                        "Off unless given: the James scan is the real-scan validation set, kept out of training")
    r.add_argument("--p-transfer", type=float, default=0.15,
                   help="share of ICT faces with the transferred texture (with --james)")
    r.add_argument("--photo-textures", type=Path, default=None, metavar="BANK",
                   help="ICT faces: dress a share of them in real skin from photos (a bank made by "
                        "'facenormals data textures')")
    r.add_argument("--p-photo", type=float, default=0.5, help="share of ICT faces in a photo texture (with "
                   "--photo-textures; faces in the James texture, with --james, are not counted)")
    r.add_argument("--units", choices=("auto", "mm", "cm", "m"), default="auto", help="units of user meshes")
    r.add_argument("--prefix", default=None, help="sample name prefix (default: 'ict' or 'mesh')")
    r.add_argument("--no-contact-sheet", action="store_true")
    p = sub.add_parser("photos", help="crop real faces from photos/videos into image-only samples")
    p.add_argument("--in", dest="inputs", type=Path, nargs="+", required=True, help="photo folders, photos or videos")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--every", type=int, default=5, help="use every N-th video frame")
    p.add_argument("--min-face", type=float, default=40.0, help="skip faces shorter than this (pixels)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--no-contact-sheet", action="store_true")
    t = sub.add_parser("textures", help="take real skin colours from photos/videos onto ICT's topology (a bank for "
                       "'data render --photo-textures')")
    t.add_argument("--in", dest="inputs", type=Path, nargs="+", required=True, help="photo folders, photos or videos")
    t.add_argument("--out", type=Path, required=True, help="the bank (.npz)")
    t.add_argument("--every", type=int, default=10, help="use every N-th video frame")
    t.add_argument("--min-face", type=float, default=150.0, help="skip faces shorter than this (pixels)")
    t.add_argument("--ict", type=Path, default=None, help="path of ict_facekit.npz (default: ../shared/data/...)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing bank")
    from facenormals.training.data import prior_cli  # mesh priors (issue 9)

    prior_cli.add_arguments(sub.add_parser("prior", help="store MediaPipe mesh priors for the images of dataset folders"))


def main(args: argparse.Namespace) -> int:
    # `kill` (SIGTERM) stops a run like Ctrl-C: workers are terminated; every file on disk is complete
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if args.action == "render":
        return _render(args)
    if args.action == "prior":
        from facenormals.training.data import prior_cli

        return prior_cli.main(args)
    if args.action == "textures":
        return _textures(args)
    return _photos(args)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _textures(args: argparse.Namespace) -> int:
    from facenormals.atomic import check_output
    from facenormals.training.data.ict import IctModel, default_ict_path
    from facenormals.training.data.photo_textures import build_bank, save_bank

    if args.every < 1:
        raise ValueError(f"--every must be at least 1, got {args.every}")
    check_output(args.out, "photo texture bank", overwrite=args.overwrite, inputs=args.inputs)
    model = IctModel(args.ict or default_ict_path())
    textures = build_bank(args.inputs, model, every=args.every, min_face_px=args.min_face)
    save_bank(args.out, textures)
    people = len({t.group for t in textures})
    print(f"{args.out}: {len(textures)} textures of {people} people")
    return 0


def _default_backgrounds() -> list[Path]:
    data = DEFAULT_SHARED / "data"
    return [p for p in (data / "photos", data / "video") if p.is_dir()]


def _render(args: argparse.Namespace) -> int:
    import numpy as np

    from facenormals.training.data import relief, synth
    from facenormals.training.data.contact_sheet import contact_sheet
    from facenormals.training.data.jobs import collect_params_csv, remove_stale_temporaries, run_parallel
    from facenormals.training.data.render_job import RenderJob

    if args.count < 1:
        raise ValueError(f"--count must be at least 1, got {args.count}")
    if not 0 < args.max_angle_deg <= 180:
        raise ValueError(f"--max-angle-deg must be in (0, 180], got {args.max_angle_deg}")
    yaw_range = None
    if args.yaw_deg is not None:
        lo, hi = args.yaw_deg
        if not 0 <= lo <= hi <= 90:
            raise ValueError(f"--yaw-deg needs 0 ≤ LO ≤ HI ≤ 90, got {lo:g} {hi:g}")
        yaw_range = (float(np.radians(lo)), float(np.radians(hi)))
    if not 0.0 <= args.profile_fraction <= 1.0:
        raise ValueError(f"--profile-fraction must be in [0, 1], got {args.profile_fraction:g}")
    if args.profile_fraction < 1.0 and yaw_range is None:
        raise ValueError("--profile-fraction needs --yaw-deg LO HI (the yaw range of the profile share)")
    identity_scale = _identity_scale(args.identity_scale)
    if not 0.0 <= args.p_photo <= 1.0:
        raise ValueError(f"--p-photo must be in [0, 1], got {args.p_photo:g}")
    if not 0.0 <= args.mild_expressions <= 1.0:
        raise ValueError(f"--mild-expressions must be in [0, 1], got {args.mild_expressions:g}")
    if args.detail_mm < 0 or args.detail_mm > 5:
        raise ValueError(f"--detail-mm must be in [0, 5] mm, got {args.detail_mm:g}")
    if not 0.0 <= args.relief_deg <= relief.MAX_RELIEF_DEG:
        raise ValueError(f"--relief-deg must be in [0, {relief.MAX_RELIEF_DEG:g}]°, got {args.relief_deg:g}")
    if args.source != "ict":
        from facenormals.training.data.meshes import list_meshes

        list_meshes(args.source)  # fail here with a clear message, not inside the worker processes
    backgrounds = _default_backgrounds() if args.backgrounds is None else list(args.backgrounds)
    settings = synth.RenderSettings(size=args.size, kind=args.kind, camera=args.camera,
                                    max_angle=float(__import__("math").radians(args.max_angle_deg)),
                                    hard_fraction=args.hard_fraction, yaw_range=yaw_range,
                                    profile_fraction=args.profile_fraction, relief_deg=args.relief_deg)
    job = RenderJob(out=args.out, source=args.source, seed=args.seed, kind=args.kind,
                    prefix=args.prefix or ("ict" if args.source == "ict" else "mesh"), settings=settings,
                    backgrounds=backgrounds, ict_path=args.ict, james_dir=args.james if args.source == "ict" else None,
                    p_transfer=args.p_transfer, photo_textures=args.photo_textures, p_photo=args.p_photo,
                    units=args.units, identity_scale=identity_scale,
                    detail_mm=args.detail_mm, mild_expressions=args.mild_expressions)
    if args.source == "ict":
        from facenormals.training.data.ict import IctModel, default_ict_path

        model = IctModel(args.ict or default_ict_path())  # fail fast with a clear message, before the workers start
        if args.photo_textures is not None:
            from facenormals.training.data.photo_textures import PhotoTextureBank

            PhotoTextureBank(args.photo_textures, model)
    args.out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(args.out)
    report = run_parallel(job, range(args.start, args.start + args.count), args.workers, f"render {args.kind}")
    collect_params_csv(args.out)
    print(f"{args.out}: {report.summary()}")
    if not args.no_contact_sheet and (report.written or report.existing):
        print(f"contact sheet: {contact_sheet(args.out, args.out / 'contact_sheet.png')}")
    return 0 if report.written + report.existing > 0 else 1


def _identity_scale(values: list[float]) -> tuple[float, float]:
    if len(values) not in (1, 2):
        raise ValueError(f"--identity-scale takes S or LO HI, got {len(values)} values")
    lo, hi = (values[0], values[0]) if len(values) == 1 else values
    if not 0 < lo <= hi <= 3:
        raise ValueError(f"--identity-scale needs 0 < LO ≤ HI ≤ 3, got {lo:g} {hi:g}")
    return float(lo), float(hi)


def _photos(args: argparse.Namespace) -> int:
    from facenormals.training.data.jobs import remove_stale_temporaries
    from facenormals.training.data.photos_job import crop_photos

    remove_stale_temporaries(args.out)

    report = crop_photos(args.inputs, args.out, every=args.every, min_face_px=args.min_face, size=args.size)
    print(f"{args.out}: {report.summary()}")
    if not args.no_contact_sheet and (report.written or report.existing):
        from facenormals.training.data.contact_sheet import contact_sheet

        print(f"contact sheet: {contact_sheet(args.out, args.out / 'contact_sheet.png')}")
    return 0 if report.written + report.existing > 0 else 1
