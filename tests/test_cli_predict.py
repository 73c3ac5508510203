"""``convexdual predict``: denoise new images with a saved network; PSNR/SSIM against clean images."""

import json

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import convexdual as cd
from convexdual.cli import main


@pytest.fixture
def saved(tmp_path, small_solution, digits_small):
    net_file = small_solution.network.save(tmp_path / "net.pt", metadata={"beta": 1.0})
    noisy, clean = digits_small
    np.savez(tmp_path / "in.npz", noisy=noisy, clean=clean)
    np.save(tmp_path / "only_noisy.npy", noisy)
    return tmp_path, net_file, noisy, clean


def test_predict_writes_outputs_and_metrics(saved, small_solution, capsys):
    tmp, net_file, noisy, clean = saved
    out = tmp / "out.npz"
    assert main(["predict", "--net", str(net_file), "--data", str(tmp / "in.npz"), "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"predict: {len(noisy)} images (8x8) on cpu") and "PSNR" in line and "SSIM" in line
    with np.load(out) as f:
        assert set(f.files) == {"denoised", "noisy", "clean"}
        np.testing.assert_allclose(f["denoised"], small_solution.network.predict(noisy), rtol=1e-12)
        den = f["denoised"]
    rep = json.loads(out.with_suffix(".json").read_text())
    ref = [(peak_signal_noise_ratio(c, d, data_range=float(c.max() - c.min())),
            structural_similarity(c, d, data_range=float(c.max() - c.min()), win_size=7)) for c, d in zip(clean, den)]
    assert rep["denoised_metrics"]["psnr"] == pytest.approx(np.mean([r[0] for r in ref]), rel=1e-12)
    assert rep["denoised_metrics"]["ssim"] == pytest.approx(np.mean([r[1] for r in ref]), rel=1e-12)
    # the net was trained on these images: it denoises them
    assert rep["denoised_metrics"]["psnr"] > rep["noisy_metrics"]["psnr"]


def test_predict_without_clean_images(saved, capsys):
    tmp, net_file, noisy, _ = saved
    out = tmp / "o.npz"
    assert main(["predict", "--net", str(net_file), "--data", str(tmp / "only_noisy.npy"), "--out", str(out),
                 "-q"]) == 0
    assert "PSNR" not in capsys.readouterr().out
    with np.load(out) as f:
        assert set(f.files) == {"denoised", "noisy"} and f["denoised"].shape == noisy.shape


def test_predict_refuses_existing_output_and_bad_input(saved, capsys):
    tmp, net_file, _, _ = saved
    out = tmp / "o.npz"
    out.write_bytes(b"earlier")
    args = ["predict", "--net", str(net_file), "--data", str(tmp / "in.npz"), "--out", str(out)]
    assert main(args) == 2
    assert "already exists; give another name, or --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"earlier"
    assert main(args + ["--overwrite"]) == 0
    np.savez(tmp / "wrong.npz", clean=np.zeros((2, 8, 8)))
    assert main(["predict", "--net", str(net_file), "--data", str(tmp / "wrong.npz"), "--out", str(tmp / "x.npz")]) == 2
    assert "predict needs 'noisy'" in capsys.readouterr().err
    np.savez(tmp / "rgb.npz", noisy=np.zeros((2, 3, 8, 8)))
    assert main(["predict", "--net", str(net_file), "--data", str(tmp / "rgb.npz"), "--out", str(tmp / "y.npz")]) == 2
    assert "has 3 channel(s) but" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_predict_cuda_on_cpu_only_torch(saved, capsys):
    tmp, net_file, _, _ = saved
    assert main(["predict", "--net", str(net_file), "--data", str(tmp / "in.npz"), "--out", str(tmp / "o.npz"),
                 "--device", "cuda"]) == 2
    assert "CPU-only; use device='cpu'" in capsys.readouterr().err
    assert not (tmp / "o.npz").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_predict_on_cuda_matches_cpu(saved):
    tmp, net_file, noisy, _ = saved
    for dev, name in (("cpu", "c.npz"), ("cuda", "g.npz")):
        assert main(["predict", "--net", str(net_file), "--data", str(tmp / "in.npz"), "--out", str(tmp / name),
                     "--device", dev, "-q"]) == 0
    with np.load(tmp / "c.npz") as c, np.load(tmp / "g.npz") as g:
        np.testing.assert_allclose(g["denoised"], c["denoised"], rtol=1e-10, atol=1e-12)
    net, _ = cd.TwoLayerConvNet.load(net_file, device="cuda")
    assert next(net.parameters()).device.type == "cuda"
