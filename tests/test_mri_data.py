"""fastMRI multi-coil reader/writer and the offline simulator."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from convexdual.mri.fastmri import FastMRIVolume, iter_slice_refs, list_volumes, write_fastmri_volume
from convexdual.mri.simulate import SimulationSpec, birdcage_maps, simulate_images, simulate_volume
from convexdual.errors import DataFormatError
from convexdual.mri import ifft2c, rss


def _kspace(rng, shape=(3, 4, 16, 12)):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    k = _kspace(rng)
    r = np.abs(rng.standard_normal((3, 10, 10))).astype(np.float32)
    mask = rng.uniform(size=12) < 0.5
    p = write_fastmri_volume(tmp_path / "v.h5", k, reconstruction_rss=r, acquisition="CORPD_FBK",
                             patient_id="p7", mask=mask)
    with FastMRIVolume(p) as vol:
        assert vol.shape == (3, 4, 16, 12) and vol.num_slices == 3 and vol.num_coils == 4
        for i in range(3):
            got = vol.kspace(i)
            assert got.dtype == np.complex64 and got.shape == (4, 16, 12)
            np.testing.assert_array_equal(got, k[i])
            np.testing.assert_array_equal(vol.reconstruction_rss(i), r[i])
        np.testing.assert_array_equal(vol.kspace(-1), k[2])
        np.testing.assert_array_equal(vol.mask(), mask)
        a = vol.attrs
        assert a["acquisition"] == "CORPD_FBK" and a["patient_id"] == "p7"
        assert a["max"] == pytest.approx(float(r.max())) and a["norm"] == pytest.approx(float(np.linalg.norm(r)))
        assert vol.matrix_sizes() == {"encoded": (16, 12, 1), "recon": (10, 10, 1)}
        with pytest.raises(IndexError, match="slice index"):
            vol.kspace(3)
    # the file itself follows the published schema
    with h5py.File(p, "r") as f:
        assert f["kspace"].dtype == np.complex64 and f["kspace"].chunks == (1, 4, 16, 12)
        assert f["reconstruction_rss"].dtype == np.float32
        assert b"ismrmrdHeader" in f["ismrmrd_header"][()]
    assert iter_slice_refs([p], skip_edge=1) == iter_slice_refs([p])[1:2]
    assert list_volumes(tmp_path) == [p]


def test_malformed_files(tmp_path):
    rng = np.random.default_rng(1)
    with pytest.raises(DataFormatError, match="no fastMRI file"):
        FastMRIVolume(tmp_path / "absent.h5")
    (tmp_path / "text.h5").write_text("not an hdf5 file")
    with pytest.raises(DataFormatError, match="not an HDF5 file"):
        FastMRIVolume(tmp_path / "text.h5")

    def make(name, **datasets):
        p = tmp_path / name
        with h5py.File(p, "w") as f:
            for key, val in datasets.items():
                f.create_dataset(key, data=val)
        return p

    header = np.bytes_(b"<ismrmrdHeader/>")
    with pytest.raises(DataFormatError, match=r"missing dataset\(s\) \['kspace'\]"):
        FastMRIVolume(make("nok.h5", ismrmrd_header=header))
    with pytest.raises(DataFormatError, match="ismrmrd_header"):
        FastMRIVolume(make("noh.h5", kspace=_kspace(rng)))
    with pytest.raises(DataFormatError, match="must be complex"):
        FastMRIVolume(make("real.h5", kspace=np.zeros((2, 3, 8, 8), np.float32), ismrmrd_header=header))
    with pytest.raises(DataFormatError, match="single-coil"):
        FastMRIVolume(make("sc.h5", kspace=_kspace(rng, (2, 8, 8)), ismrmrd_header=header))
    with pytest.raises(DataFormatError, match=r"\(slices, coils, H, W\)"):
        FastMRIVolume(make("5d.h5", kspace=_kspace(rng, (1, 2, 2, 8, 8)), ismrmrd_header=header))
    with pytest.raises(DataFormatError, match="reconstruction_rss"):
        FastMRIVolume(make("rss.h5", kspace=_kspace(rng), ismrmrd_header=header,
                           reconstruction_rss=np.zeros((5, 8, 8), np.float32)))
    # a complete file without reconstruction_rss (challenge test set) opens; asking for RSS explains
    with FastMRIVolume(make("test.h5", kspace=_kspace(rng), ismrmrd_header=header)) as vol:
        assert not vol.has_rss and vol.matrix_sizes() == {}
        with pytest.raises(DataFormatError, match="no 'reconstruction_rss'"):
            vol.reconstruction_rss(0)
    with pytest.raises(ValueError, match="complex"):
        write_fastmri_volume(tmp_path / "bad.h5", np.zeros((2, 3, 8, 8)))
    with pytest.raises(DataFormatError, match="no .h5 files"):
        list_volumes(_mkdir(tmp_path / "empty"))
    with pytest.raises(DataFormatError, match="not a directory"):
        list_volumes(tmp_path / "text.h5")


def _mkdir(d):
    d.mkdir()
    return d


def test_simulated_volume_is_consistent(tmp_path):
    spec = SimulationSpec(shape=(32, 28), num_coils=4, num_slices=2, source="shepp_logan", recon_size=24)
    p = simulate_volume(tmp_path / "sim.h5", spec, seed=3)
    with FastMRIVolume(p) as vol:
        assert vol.shape == (2, 4, 32, 28)
        k = vol.kspace(1)
        # maps are normalised, so the RSS of the coil images is the image magnitude, cropped as stored
        full = rss(ifft2c(k))
        np.testing.assert_allclose(full[4:28, 2:26], vol.reconstruction_rss(1), rtol=1e-4, atol=1e-5)
        assert vol.attrs["max"] == pytest.approx(1.0, rel=1e-3)
    S = birdcage_maps(4, (32, 28))
    np.testing.assert_allclose(np.sum(np.abs(S) ** 2, axis=0), 1.0, rtol=1e-12)
    imgs = simulate_images("skimage", 3, (24, 24), seed=0)
    assert imgs.shape == (3, 24, 24) and np.iscomplexobj(imgs)
    assert np.abs(imgs).max() == pytest.approx(1.0)
    assert not np.allclose(np.angle(imgs[0][np.abs(imgs[0]) > 0.1]), 0.0)  # a real phase was applied
    with pytest.raises(ValueError, match="source must be one of"):
        SimulationSpec(source="mnist")


def test_nan_kspace_is_refused_naming_file_and_slice(tmp_path):
    """Issue 11, item 20: NaN/Inf k-space is stopped where it enters, with the file and slice named."""
    from convexdual.mri.prepare import PrepOptions, build_cache, prepare_slice

    rng = np.random.default_rng(5)
    k = _kspace(rng)
    k[1, 2, 3, 4] = np.nan
    k[1, 0, 0, 0] = np.inf
    p = tmp_path / "nan.h5"
    with h5py.File(p, "w") as f:  # written around write_fastmri_volume, which refuses NaN itself
        f.create_dataset("kspace", data=k)
        f.create_dataset("ismrmrd_header", data=np.bytes_(b"<ismrmrdHeader/>"))
    with FastMRIVolume(p) as vol:
        assert np.isfinite(vol.kspace(0)).all()  # the clean slices still read
        with pytest.raises(DataFormatError, match=r"nan\.h5: slice 1 of 'kspace' contains 2 NaN/Inf"):
            vol.kspace(1)
        with pytest.raises(DataFormatError, match="slice 1 of 'kspace'"):
            vol.kspace(-2)
    with pytest.raises(DataFormatError, match=r"nan\.h5: slice 1 .*NaN/Inf"):
        build_cache(iter_slice_refs([p])[1:], tmp_path / "cache.h5", PrepOptions(crop=(8, 8)))
    assert not (tmp_path / "cache.h5").exists() and not (tmp_path / "cache.h5.partial").exists()
    # k-space given as an array (not from a file) is checked too, before any map estimation
    with pytest.raises(ValueError, match="kspace of slice 7 contains 2 NaN/Inf"):
        prepare_slice(k[1], PrepOptions(), slice_number=7)


def test_simulated_kspace_refuses_nan_inputs():
    from convexdual.mri.simulate import simulate_kspace

    imgs = simulate_images("shepp_logan", 1, (16, 16), seed=0)
    maps = birdcage_maps(2, (16, 16))
    assert np.isfinite(simulate_kspace(imgs, maps)).all()
    bad = imgs.copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="images contain 1 NaN/Inf"):
        simulate_kspace(bad, maps)
    m = maps.copy()
    m[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="maps contain 1 NaN/Inf"):
        simulate_kspace(imgs, m)
    with pytest.raises(ValueError, match="noise must be a finite number"):
        simulate_kspace(imgs, maps, noise=float("nan"))


def test_simulated_dataset_and_slice_cache_are_reused_only_for_the_same_inputs(tmp_path):
    from convexdual.mri.masks import MaskSpec
    from convexdual.mri.prepare import PrepOptions, SliceCache, build_cache
    from convexdual.mri.simulate import simulate_dataset

    spec = SimulationSpec(shape=(24, 24), num_coils=3, num_slices=2)
    files = simulate_dataset(tmp_path / "d", 2, spec, seed=3, reuse=True)
    stamps = [p.stat().st_mtime_ns for p in files]
    # same spec and seeds: the files are kept as they are (so caches built from them stay valid)
    assert simulate_dataset(tmp_path / "d", 2, spec, seed=3, reuse=True) == files
    assert [p.stat().st_mtime_ns for p in files] == stamps
    opts = PrepOptions(mask=MaskSpec("poisson", 2.0, calib=6), calib_width=6, crop=(16, 16))
    refs = iter_slice_refs(files)
    first = build_cache(refs, tmp_path / "c.h5", opts, reuse=True)
    assert first["reused"] == 0.0 and first["num_slices"] == 4
    with SliceCache(tmp_path / "c.h5") as c:
        zf0, tg0 = c.slices()
    again = build_cache(refs, tmp_path / "c.h5", opts, reuse=True)
    assert again["reused"] == 1.0 and again["seconds_per_slice"] == first["seconds_per_slice"]
    # other options, other slices, or no reuse: prepared anew
    other = PrepOptions(mask=MaskSpec("poisson", 3.0, calib=6), calib_width=6, crop=(16, 16))
    assert build_cache(refs, tmp_path / "c.h5", other, reuse=True)["reused"] == 0.0
    assert build_cache(refs[:3], tmp_path / "c.h5", opts, reuse=True)["reused"] == 0.0
    assert build_cache(refs, tmp_path / "c.h5", opts, reuse=True)["reused"] == 0.0
    assert build_cache(refs, tmp_path / "c.h5", opts)["reused"] == 0.0
    with SliceCache(tmp_path / "c.h5") as c:
        zf1, tg1 = c.slices()
    np.testing.assert_array_equal(zf0, zf1)
    np.testing.assert_array_equal(tg0, tg1)
    # another spec: the file is simulated again (and a cache built from the old file is not reused)
    spec2 = SimulationSpec(shape=(24, 24), num_coils=4, num_slices=2)
    files2 = simulate_dataset(tmp_path / "d", 2, spec2, seed=3, reuse=True)
    assert files2 == files
    with FastMRIVolume(files2[0]) as vol:
        assert vol.num_coils == 4
    assert build_cache(iter_slice_refs(files2), tmp_path / "c.h5", opts, reuse=True)["reused"] == 0.0
