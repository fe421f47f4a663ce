"""The format-1 feature file and the foreign formats it reads."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from acmil.features import (
    FeatureFileError,
    FeatureWriter,
    infer_patch_size,
    list_feature_files,
    read_feature_matrix,
    read_features,
    read_meta,
    write_features,
)


def _grid(n: int, step: int = 512) -> np.ndarray:
    return np.stack([np.arange(n) % 10 * step, np.arange(n) // 10 * step], axis=1).astype(np.int64)


def test_round_trip_with_attributes(tmp_path):
    feats = np.random.default_rng(0).normal(size=(25, 8)).astype(np.float32)
    path = write_features(
        tmp_path / "s1.h5",
        feats,
        _grid(25),
        attrs={"slide_id": "s1", "encoder": "resnet18", "tissue_params": {"a": 1}},
        coord_attrs={"patch_size_level0": 512, "patch_size": 256},
    )
    got = read_features(path)
    np.testing.assert_array_equal(got.features, feats)
    np.testing.assert_array_equal(got.coords, _grid(25))
    assert got.slide_id == "s1" and got.attrs["format_version"] == 1 and got.patch_size_level0 == 512
    meta = read_meta(path)
    assert (meta.n_patches, meta.dim, meta.kind) == (25, 8, "format1")


def test_writer_leaves_no_final_file_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with FeatureWriter(tmp_path / "s.h5", dim=4) as writer:
            writer.append(np.zeros((3, 4)), np.zeros((3, 2)))
            raise RuntimeError("encoder crashed")
    assert list(tmp_path.iterdir()) == []


def test_partial_files_are_not_listed(tmp_path):
    writer = FeatureWriter(tmp_path / "s.h5", dim=4)
    writer.append(np.zeros((3, 4)), np.zeros((3, 2)))
    assert list_feature_files(tmp_path) == {}
    writer.close()
    assert list(list_feature_files(tmp_path)) == ["s"]


def test_float16_and_clam_files_read_as_float32_with_inferred_patch_size(tmp_path):
    path = tmp_path / "clam.h5"
    with h5py.File(path, "w") as h5:
        h5["features"] = np.ones((12, 6), dtype=np.float16)
        h5["coords"] = _grid(12, step=448)
    got = read_features(path)
    assert got.features.dtype == np.float32 and got.slide_id == "clam"
    assert got.patch_size_level0 == 448 and read_meta(path).kind == "clam"


def test_feature_matrix_is_the_features_of_every_layout(tmp_path):
    """The training reader (features only) gives what read_features gives, for each file layout."""
    rng = np.random.default_rng(1)
    values = rng.normal(size=(7, 5))
    paths = [write_features(tmp_path / "f1.h5", values.astype(np.float32), _grid(7))]
    for name, stored in (("f16.h5", values.astype(np.float16)), ("three_d.h5", values.astype(np.float32)[None])):
        with h5py.File(tmp_path / name, "w") as h5:
            h5["features"] = stored
            h5["coords"] = _grid(7)
        paths.append(tmp_path / name)
    with h5py.File(tmp_path / "reference.h5", "w") as h5:
        h5.create_group("s")["feat"] = values.astype(np.float32)
    paths.append(tmp_path / "reference.h5")
    for path in paths:
        got = read_feature_matrix(path)
        assert got.dtype == np.float32 and got.shape == (7, 5), path.name
        np.testing.assert_array_equal(got, read_features(path).features)
    with pytest.raises(FeatureFileError, match="gone.h5"):
        read_feature_matrix(tmp_path / "gone.h5")


def test_acmil_reference_dataset_file(tmp_path):
    path = tmp_path / "dataset.h5"
    with h5py.File(path, "w") as h5:
        for sid in ("a", "b"):
            grp = h5.create_group(sid)
            grp["feat"] = np.full((4, 3), ord(sid), dtype=np.float32)
            grp["coords"] = _grid(4)
            grp.attrs["label"] = 1
    assert read_features(path, "b").features[0, 0] == ord("b")
    with pytest.raises(FeatureFileError, match="2 slides"):
        read_features(path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"not hdf5 at all"), "not a readable HDF5"),
        (lambda p: write_features(p, np.zeros((0, 4), np.float32), np.zeros((0, 2))), "empty bag"),
        (lambda p: write_features(p, np.array([[np.nan, 1.0]], np.float32), np.zeros((1, 2))), "NaN or inf"),
    ],
)
def test_bad_files_name_the_file(tmp_path, make, message):
    path = tmp_path / "bad.h5"
    make(path)
    with pytest.raises(FeatureFileError, match=message) as err:
        read_features(path)
    assert str(path) in str(err.value)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = write_features(tmp_path / "t.h5", np.ones((2000, 64), np.float32), _grid(2000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FeatureFileError, match="t.h5"):
        read_features(path)


def test_infer_patch_size_of_single_patch_is_none():
    assert infer_patch_size(np.array([[5, 5]])) is None
