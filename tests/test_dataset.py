from pathlib import Path

import cv2
import numpy as np
import pytest

from facenormals.conventions import sphere_normals
from facenormals.dataset import DatasetWriter, SampleKind, load_sample, scan_dataset
from facenormals.fileio import DataError


def _write_mixed(root: Path) -> None:
    normals, mask = sphere_normals(32)
    image = np.full((32, 32, 3), 128, np.uint8)
    writer = DatasetWriter(root)
    writer.write("pair", mask, image=image, normals=normals)
    writer.write("img", mask, image=image)
    writer.write("nrm", mask, normals=normals)
    DatasetWriter(root, normal_format="npy").write("nrm_npy", mask, normals=normals,
                                                   depth_mm=np.full((32, 32), 500, np.uint16))


def test_reader_classifies_kinds(tmp_path: Path):
    _write_mixed(tmp_path)
    kinds = {s.name: s.kind for s in scan_dataset(tmp_path)}
    assert kinds == {"pair": SampleKind.PAIRED, "img": SampleKind.IMAGE_ONLY, "nrm": SampleKind.NORMAL_ONLY,
                     "nrm_npy": SampleKind.NORMAL_ONLY}
    samples = {s.name: load_sample(s) for s in scan_dataset(tmp_path)}
    assert samples["pair"].image.shape == (32, 32, 3) and samples["pair"].normals.shape == (32, 32, 3)
    assert samples["nrm_npy"].depth_mm.dtype == np.uint16
    assert samples["img"].normals is None


def test_missing_mask(tmp_path: Path):
    _write_mixed(tmp_path)
    (tmp_path / "masks" / "img.png").unlink()
    with pytest.raises(DataError, match=r"no mask.*img"):
        scan_dataset(tmp_path)


def test_size_mismatch_names_file(tmp_path: Path):
    _write_mixed(tmp_path)
    cv2.imwrite(str(tmp_path / "images" / "pair.png"), np.zeros((16, 16, 3), np.uint8))
    bad = next(s for s in scan_dataset(tmp_path) if s.name == "pair")
    with pytest.raises(DataError, match=r"pair\.png.*differs"):
        load_sample(bad)


def test_duplicate_normal_files(tmp_path: Path):
    _write_mixed(tmp_path)
    (tmp_path / "normals" / "pair.npy").write_bytes((tmp_path / "normals" / "nrm_npy.npy").read_bytes())
    with pytest.raises(DataError, match="two files"):
        scan_dataset(tmp_path)


def test_wrong_bit_depth_depth(tmp_path: Path):
    _write_mixed(tmp_path)
    cv2.imwrite(str(tmp_path / "depth" / "nrm_npy.png"), np.zeros((32, 32), np.uint8))
    bad = next(s for s in scan_dataset(tmp_path) if s.name == "nrm_npy")
    with pytest.raises(DataError, match="uint16"):
        load_sample(bad)


def test_empty_and_missing_folders(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        scan_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="no samples"):
        scan_dataset(tmp_path)
