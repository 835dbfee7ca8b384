"""The picklable job behind ``facenormals data render``: one sample per index, written into a dataset folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from facenormals.dataset import DatasetWriter
from facenormals.fileio import DataError
from facenormals.training.data import augment, synth
from facenormals.training.data.jobs import SampleJob, sample_rng, write_params


@dataclass
class RenderJob(SampleJob):
    out: Path
    source: str  # "ict" or a mesh folder / file
    seed: int
    kind: str = "paired"
    prefix: str = "ict"
    settings: synth.RenderSettings = field(default_factory=synth.RenderSettings)
    backgrounds: list[Path] = field(default_factory=list)
    ict_path: Path | None = None
    james_dir: Path | None = None  # texture transfer source for ICT albedo
    p_transfer: float = 0.15
    photo_textures: Path | None = None  # bank of real photo colours (photo_textures.py) for ICT albedo
    p_photo: float = 0.5
    units: str = "auto"
    identity_scale: tuple[float, float] = (1.0, 1.0)  # ICT identity weights N(0, 1)·s, s uniform in this range
    detail_mm: float = 0.0  # peak of the smooth displacement outside ICT's span (detail.py), uniform in [0, this]
    mild_expressions: float = 0.0  # share of ICT faces with their expression mix scaled down (sources.IctSource)

    def setup(self) -> None:
        from facenormals.training.data import sources

        if self.source == "ict":
            self._source = sources.IctSource(self.ict_path, p_transfer=self.p_transfer,
                                             identity_scale=self.identity_scale, detail_mm=self.detail_mm,
                                             mild_expressions=self.mild_expressions)
            if self.james_dir is not None and self.kind == "paired" and self.p_transfer > 0:
                self._source.enable_transfer(self.james_dir)
            if self.photo_textures is not None and self.kind == "paired" and self.p_photo > 0:
                self._source.enable_photo_textures(self.photo_textures, self.p_photo)
        else:
            self._source = sources.MeshSource(self.source, units=self.units)
        self._backgrounds = augment.Backgrounds(self.backgrounds) if self.kind == "paired" else None
        self._writer = DatasetWriter(self.out)

    def name(self, index: int) -> str:
        return f"{self.prefix}_{index:06d}"

    def run(self, index: int) -> str:
        name = self.name(index)
        if self._writer.exists(name):
            return "exists"
        rng = sample_rng(self.seed, index)
        paired = self.kind == "paired"
        try:
            if self.source == "ict":
                mesh = self._source.sample(rng, with_albedo=paired)
            else:
                mesh = self._source.sample(rng, index, with_albedo=paired)
            result = synth.render(mesh, self.settings, rng, self._backgrounds)
        except DataError as err:
            return f"{err}"
        except Exception as err:  # one odd mesh or pose must not end a long run: counted and reported
            return f"{self.name(index)}: {type(err).__name__}: {err}"
        if result.mask.sum() < 0.02 * result.mask.size:
            return "face mask under 2 % of the crop (mesh not facing +z?)"
        params = {"kind": self.kind, "seed": self.seed, "index": index, **result.params}
        write_params(self.out, name, params)
        self._writer.write(name, result.mask, image=result.image if paired else None, normals=result.normals,
                           depth_mm=result.depth_mm if paired else None)
        return "written"

