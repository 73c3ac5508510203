"""Stacked two-layer nets (Section 4.3) and the deeper-nets experiment at smoke size.

Checked against independent computations: an explicit patch matrix (index loops) and numpy
ReLU for every block, objectives and losses recomputed from the saved weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import convexdual as cd
from convexdual import plotting as pl
from convexdual.errors import DataFormatError
from convexdual.experiments.mnist import common as C
from convexdual.stacked import StackedConvNet, train_stacked
from tests._reference import net_objective_ref, patch_matrix_ref
from tests.test_figures import _assert_complete


def _block_ref(x: np.ndarray, U: np.ndarray, v: np.ndarray, k: int, residual: bool = False) -> np.ndarray:
    """``[x_0 +] sum_j v_j relu(X u_j)`` from the explicit patch matrix; ``x`` (N, C, H, W) -> (N, H, W)."""
    N, _, H, W = x.shape
    X = patch_matrix_ref(x, k)
    out = (np.maximum(X @ U.T, 0.0) @ v).reshape(N, H, W)
    return out + x[:, 0] if residual else out


def _stack_ref(net: StackedConvNet, x: np.ndarray) -> list[np.ndarray]:
    outs = []
    for b in net.blocks:
        U, v = b.filters()
        x = _block_ref(x, U, v, b.kernel_size, b.residual)[:, None]
        outs.append(x[:, 0])
    return outs


def _random_stack(seed=0, residual=(False, True)) -> StackedConvNet:
    g = np.random.default_rng(seed)
    b1 = cd.TwoLayerConvNet.from_filters(g.standard_normal((5, 2 * 9)), g.standard_normal(5), 2, 3,
                                         residual=residual[0])
    b2 = cd.TwoLayerConvNet.from_filters(g.standard_normal((4, 25)), g.standard_normal(4), 1, 5, residual=residual[1])
    return StackedConvNet([b1, b2])


def test_forward_is_the_composition_of_the_blocks():
    net = _random_stack()
    x = np.random.default_rng(1).standard_normal((3, 2, 7, 6))
    ref = _stack_ref(net, x)
    with torch.no_grad():
        got = net(torch.from_numpy(x))[:, 0].numpy()
    np.testing.assert_allclose(got, ref[-1], rtol=1e-10, atol=1e-10)
    blocks = net.predict_blocks(x, batch_size=2)  # batching does not change anything
    for a, b in zip(blocks, ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    ins = net.block_inputs(x)
    np.testing.assert_allclose(ins[1][:, 0], ref[0], atol=1e-10)
    assert net.widths == [5, 4] and net.in_channels == 2


def test_save_load_round_trip_weights_only_and_atomic(tmp_path):
    net = _random_stack(2)
    path = tmp_path / "stack.pt"
    net.save(path, {"beta": 1.5, "mode": "greedy"})
    blob = torch.load(path, weights_only=True)  # tensors, numbers and strings only
    assert blob["format"] == "convexdual.StackedConvNet/1" and len(blob["blocks"]) == 2
    back, meta = StackedConvNet.load(path)
    assert meta == {"beta": 1.5, "mode": "greedy"}
    assert [b.config() for b in back.blocks] == [b.config() for b in net.blocks]
    for (k1, a), (k2, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert k1 == k2 and torch.equal(a, b)
    x = np.random.default_rng(3).standard_normal((2, 2, 6, 6))
    np.testing.assert_array_equal(back.predict(x), net.predict(x))
    # a failed save (bad metadata) leaves the old file whole and no temporary file
    before = path.read_bytes()
    with pytest.raises(TypeError, match="JSON-able"):
        net.save(path, {"bad": float("nan")})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["stack.pt"]


def test_load_refuses_other_and_broken_files(tmp_path):
    two = tmp_path / "two.pt"
    cd.TwoLayerConvNet(1, 3, 3).save(two)
    with pytest.raises(DataFormatError, match="stacked-network"):
        StackedConvNet.load(two)
    with pytest.raises(DataFormatError, match="no network file"):
        StackedConvNet.load(tmp_path / "missing.pt")
    net = _random_stack(4)
    path = tmp_path / "s.pt"
    net.save(path)
    blob = torch.load(path, weights_only=True)
    blob["blocks"][1]["config"]["in_channels"] = 2  # block 2 would read 2 channels: does not chain
    blob["blocks"][1]["state_dict"]["conv1.weight"] = torch.zeros(4, 2, 5, 5, dtype=torch.float64)
    torch.save(blob, path)
    with pytest.raises(DataFormatError, match="block 2"):
        StackedConvNet.load(path)
    blob["blocks"][1]["config"]["in_channels"] = 1  # now the weights do not match the config
    torch.save(blob, path)
    with pytest.raises(DataFormatError, match="shape"):
        StackedConvNet.load(path)
    with pytest.raises(ValueError, match="block 2 takes 2 channels"):
        StackedConvNet([cd.TwoLayerConvNet(1, 2, 3), cd.TwoLayerConvNet(2, 2, 3)])


def test_train_stacked_objective_is_the_nets_own():
    g = np.random.default_rng(0)
    clean = g.standard_normal((3, 6, 6))
    noisy = clean + 0.5 * g.standard_normal(clean.shape)
    beta = 0.3
    res = train_stacked(noisy, clean, widths=[4, 3], beta=beta, epochs=15, batch_size=2, lr=1e-2, seed=1,
                        test=(noisy[:2], clean[:2]))
    h = res.history
    assert h[-1]["objective"] < h[0]["objective"]
    out = _stack_ref(res.network, noisy[:, None])
    theta = sum(float((p.detach().numpy() ** 2).sum()) for p in res.network.parameters())
    ref = 0.5 * float(((out[-1] - clean) ** 2).sum()) + 0.5 * beta * theta
    assert res.objective == pytest.approx(ref, rel=1e-10)
    for b in range(2):
        assert h[-1][f"train_loss_block{b + 1}"] == pytest.approx(0.5 * np.mean((out[b] - clean) ** 2), rel=1e-10)
    tout = _stack_ref(res.network, noisy[:2, None])
    assert h[-1]["test_loss"] == pytest.approx(0.5 * np.mean((tout[-1] - clean[:2]) ** 2), rel=1e-10)


def test_train_stacked_applies_weight_decay_to_every_block():
    g = np.random.default_rng(0)
    clean = g.standard_normal((3, 6, 6))
    noisy = clean + 0.5 * g.standard_normal(clean.shape)
    init = StackedConvNet.initialized(1, [4, 3], seed=1)
    norms0 = [sum(float((p.detach() ** 2).sum()) for p in b.parameters()) for b in init.blocks]
    res = train_stacked(noisy, clean, widths=[4, 3], beta=1e4, epochs=30, batch_size=3, lr=1e-2, seed=1)
    norms = [sum(float((p.detach() ** 2).sum()) for p in b.parameters()) for b in res.network.blocks]
    # a huge weight decay dominates the fit: every block's weights shrink far below their init
    assert all(n < 0.1 * n0 for n, n0 in zip(norms, norms0)), (norms, norms0)


# --------------------------------------------------------------------------------------------- experiment
def _run(out: Path, *extra: str):
    from convexdual.experiments.mnist import deeper_nets

    p = argparse.ArgumentParser()
    deeper_nets.add_arguments(p)
    with pl.capture() as figs:
        assert deeper_nets.run(p.parse_args(["--smoke", "--out", str(out), *extra])) == 0
    return json.loads((out / "deeper_nets.json").read_text()), figs


def _data(res) -> C.Data:
    s = res["settings"]
    args = argparse.Namespace(data=s["data"], num_train=s["num_train"], num_test=s["num_test"], upsample=1)
    return C.load_data(args, "gaussian", res["sigma"], s["seed"])


@pytest.fixture(scope="module")
def greedy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("greedy")
    res, figs = _run(out, "--mode", "greedy")
    return out, res, figs


@pytest.fixture(scope="module")
def unrolled_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("unrolled")
    res, figs = _run(out, "--mode", "unrolled")
    return out, res, figs


def test_greedy_blocks_are_certified_and_chained(greedy_run):
    out, res, figs = greedy_run
    assert res["modes"] == ["greedy"] and "unrolled" not in res
    blocks = res["greedy"]["blocks"]
    assert [b["block"] for b in blocks] == [1, 2]
    net, _ = StackedConvNet.load(out / "nets" / "greedy_gaussian_0.5.pt")
    data = _data(res)
    train_out = _stack_ref(net, data.noisy[:, None])
    inputs = [data.noisy, train_out[0]]  # block 2 is trained on block 1's output, targets the clean images
    for rec, blk, x in zip(blocks, net.blocks, inputs):
        c = rec["certificate"]
        assert rec["status"] == "optimal" and c["ok"] and c["relative_gap"] < 1e-6
        U, v = blk.filters()
        mine = net_objective_ref(U, v, x, data.clean, 3, rec["beta"], "squared")
        assert mine == pytest.approx(rec["objective"], rel=1e-5)  # the recovered block realises (4)'s optimum
        assert c["dual_bound"] <= mine * (1 + 1e-9)
    # end to end and per block on the test set, from the saved weights
    test_out = _stack_ref(net, data.noisy_test[:, None])
    for rec, o in zip(blocks, test_out):
        assert rec["after_test_loss"] == pytest.approx(0.5 * np.mean((o - data.clean_test) ** 2), rel=1e-9)
    assert res["greedy"]["end_to_end"]["test_loss"] == pytest.approx(
        0.5 * np.mean((test_out[-1] - data.clean_test) ** 2), rel=1e-9)
    assert blocks[1]["input_test_loss"] == pytest.approx(blocks[0]["after_test_loss"], rel=1e-12)
    _assert_complete(figs, {"deeper_psnr.png", "kmeans_greedy.png"})
    assert "certificate" in (out / "summary.md").read_text()


def _codes_ref(block, x, keep):
    U, v = block.filters()
    N, _, H, W = x.shape
    return (patch_matrix_ref(x, block.kernel_size) @ U[keep].T >= 0).reshape(N * H * W, -1)


def test_unrolled_net_and_its_dual_view(unrolled_run):
    out, res, figs = unrolled_run
    u = res["unrolled"]
    assert res["modes"] == ["unrolled"] and u["widths"] == [8, 8]
    h = u["history"]
    assert h[-1]["objective"] < h[0]["objective"]
    net, meta = StackedConvNet.load(out / "nets" / "unrolled_gaussian_0.5_2x8.pt")
    data = _data(res)
    tr = _stack_ref(net, data.noisy[:, None])
    theta = sum(float((p.detach().numpy() ** 2).sum()) for p in net.parameters())
    assert u["objective"] == pytest.approx(0.5 * float(((tr[-1] - data.clean) ** 2).sum()) + 0.5 * meta["beta"] * theta,
                                           rel=1e-9)
    te = _stack_ref(net, data.noisy_test[:, None])
    for rec, o in zip(u["per_block"], te):
        assert rec["test_loss"] == pytest.approx(0.5 * np.mean((o - data.clean_test) ** 2), rel=1e-9)
    # k-means of each iteration: codes on the clean digits pushed through the blocks before it
    digits = data.clean_test[res["kmeans_indices"]]
    x = digits[:, None]
    for blk, km in zip(net.blocks, u["kmeans"]):
        U, v = blk.filters()
        norms = np.abs(v) * np.linalg.norm(U, axis=1)
        keep = norms > 1e-6 * norms.max()
        assert km["num_paths"] == int(keep.sum())
        codes = _codes_ref(blk, x, keep)
        labels = np.asarray(km["labels"]).ravel()
        assert km["distinct_codes"] == len(np.unique(codes, axis=0))
        _, inv = np.unique(codes, axis=0, return_inverse=True)
        for g in np.unique(inv):  # identical activation codes share a cluster
            assert len(np.unique(labels[np.asarray(inv).ravel() == g])) == 1
        counts = np.bincount(labels)
        assert len(counts) <= res["settings"]["clusters"] and np.all(np.diff(counts) <= 0)  # 0 = most pixels
        assert km["active_paths_per_pixel"]["mean"] == pytest.approx(codes.sum(axis=1).mean())
        x = _block_ref(x, U, v, blk.kernel_size)[:, None]
    assert -1 <= u["ari_block1_vs_two_layer_twin"] <= 1
    assert u["two_layer_twin"]["width"] == 8
    _assert_complete(figs, {"deeper_psnr.png", "kmeans_unrolled.png", "unrolled_training.png"})


@pytest.mark.slow
def test_deeper_nets_both_modes_resume(tmp_path):
    res, _ = _run(tmp_path, "--mode", "both")
    assert res["modes"] == ["greedy", "unrolled"]
    unit = next((tmp_path / "units").glob("unrolled_*.json"))
    rec = json.loads(unit.read_text())
    rec["objective"] = 12345.0  # marker: a resumed run reuses the unit instead of retraining
    unit.write_text(json.dumps(rec))
    res2, _ = _run(tmp_path, "--mode", "both", "--resume")
    assert res2["unrolled"]["objective"] == 12345.0
    assert res2["greedy"]["blocks"][1].get("reused") is True
