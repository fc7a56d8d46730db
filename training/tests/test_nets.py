"""Depth networks: budgets, twin parity, options, and the architecture descriptions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imexdepth_train import nets
from imexdepth_train.fixtures import TinyNet

torch.set_num_threads(1)

FRAME = (1, 3, 240, 320)
MAC_BUDGET = 1.5e9
PARAM_BUDGET = 2_000_000


@pytest.fixture(scope="module")
def depth_nets() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {arch: nets.build_model(arch) for arch in nets.DEPTH_ARCHS}


def test_parameter_and_mac_budgets(depth_nets):
    for arch, model in depth_nets.items():
        params = nets.count_parameters(model)
        macs = nets.count_macs(*model.describe(), FRAME)
        assert params <= PARAM_BUDGET, (arch, params)
        assert macs["total"] <= MAC_BUDGET, (arch, macs)
        assert macs["conv"] >= 0.5e9, (arch, macs)  # the layout of the module doc, not a toy


def test_twins_differ_only_by_the_implicit_kernels(depth_nets):
    imex_net, resnet = depth_nets["imexnet-depth"], depth_nets["resnet-depth"]
    p_imex, p_res = nets.count_parameters(imex_net), nets.count_parameters(resnet)
    kernels = sum(p.numel() for n, p in imex_net.named_parameters() if n.endswith("solve.kernel"))
    o = imex_net.options
    assert kernels == 9 * (o.blocks1 * o.c2 + o.blocks2 * o.c3)
    assert p_imex - p_res == kernels
    assert abs(p_imex - p_res) / p_res <= 0.02
    ops_imex = [n["op"] for n in imex_net.describe()[0]["nodes"]]
    ops_res = [n["op"] for n in resnet.describe()[0]["nodes"]]
    assert [("residual" if op == "imex" else op) for op in ops_imex] == ops_res
    assert ops_imex.count("imex") == o.blocks1 + o.blocks2


@pytest.mark.parametrize("options", [{}, {"coords": True, "row_prior": True},
                                     {"boundary": "periodic", "coords": True}])
def test_output_is_positive_depth_at_input_resolution(options):
    torch.manual_seed(1)
    model = nets.build_model("imexnet-depth", c1=8, c2=8, c3=8, c_dec=8, blocks1=1, blocks2=1,
                             pad=4, height=96, **options).eval()
    with torch.no_grad():
        depth = model(torch.rand(2, 3, 96, 128))
    assert depth.shape == (2, 1, 96, 128)
    assert torch.all(depth > 0.1) and torch.all(depth < 20.0)


def test_soft_clamp_has_unit_slope_at_the_middle_and_stays_in_range():
    head = nets.DepthHead(None, 0.1, 20.0, 2.5)
    mid = 0.5 * (np.log(0.1) + np.log(20.0))
    z = torch.tensor([mid - 1e-3, mid + 1e-3, -100.0, 100.0], dtype=torch.float64)
    logd = torch.log(head(z))
    assert abs(float(logd[1] - logd[0]) / 2e-3 - 1.0) < 1e-4
    assert np.log(0.1) - 1e-9 <= float(logd[2]) and float(logd[3]) <= np.log(20.0) + 1e-9


def test_row_prior_is_a_trainable_per_row_tensor_and_checks_height():
    model = nets.build_model("resnet-depth", row_prior=True, height=240)
    arch, weights = model.describe()
    prior = [n for n in arch["nodes"] if n["op"] == "add_tensor"]
    assert len(prior) == 1 and weights[prior[0]["tensor"]].shape == (1, 1, 240, 1)
    assert model.head.prior.requires_grad
    with pytest.raises(ValueError, match="row prior has 240 rows"):
        model(torch.rand(1, 3, 96, 128))


def test_coords_option_feeds_five_channels_to_the_stem():
    model = nets.build_model("imexnet-depth", coords=True)
    arch, weights = model.describe()
    assert [n["op"] for n in arch["nodes"][:3]] == ["normalize", "coords", "concat"]
    assert weights["stem1.weight"].shape[1] == 5


def test_describe_names_every_initializer_once_and_folds_batchnorm():
    torch.manual_seed(2)
    model = TinyNet(boundary="reflect")
    with torch.no_grad():
        model.conv_a.bn.running_mean.uniform_(-1, 1)
        model.conv_a.bn.running_var.uniform_(0.5, 2)
    arch, weights = model.describe()
    referenced = set()
    for node in arch["nodes"]:
        for key in ("weight", "bias", "scale", "kernel", "tensor"):
            if isinstance(node.get(key), str):
                referenced.add(node[key])
    assert referenced == set(weights)
    assert all(w.dtype == np.float32 for w in weights.values())
    bn, conv = model.conv_a.bn, model.conv_a.conv
    x = torch.randn(1, 5, 8, 8)
    want = bn.eval()(conv(x))
    got = torch.nn.functional.conv2d(x, torch.from_numpy(weights["conv_a.weight"]),
                                     torch.from_numpy(weights["conv_a.bias"]), padding=1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # Every architecture tensor is produced before it is read, and the output is last.
    assert arch["nodes"][-1]["output"] == arch["output"] == "depth"
    nets.infer_shapes(arch, weights, (1, 3, 24, 32))


def test_exported_kernels_are_the_zero_mean_projection():
    model = nets.build_model("imexnet-depth")
    with torch.no_grad():
        model.stage1[0].imex.solve.kernel.add_(0.3)
    _, weights = model.describe()
    kernel = weights["stage1.0.imex.kernel"]
    assert kernel.shape == (32, 1, 3, 3)
    np.testing.assert_allclose(kernel.sum(axis=(2, 3)), 0.0, atol=1e-5)


def test_implicit_kernels_receive_gradients():
    model = nets.build_model("imexnet-depth", c1=8, c2=8, c3=8, c_dec=8, blocks1=1, blocks2=1,
                             pad=4, height=96)
    model(torch.rand(1, 3, 96, 128)).log().mean().backward()
    grads = [p.grad for n, p in model.named_parameters() if n.endswith("solve.kernel")]
    assert len(grads) == 2 and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_mac_counter_on_a_known_layer():
    arch = {"name": "t", "input": "image", "output": "y", "nodes": [
        {"op": "conv", "inputs": ["image"], "output": "a", "weight": "w", "bias": None,
         "stride": 2, "padding": 1, "groups": 1},
        {"op": "imex", "inputs": ["a", "a"], "output": "y", "kernel": "k", "h": 1.0,
         "boundary": "reflect", "pad": 2}]}
    weights = {"w": np.zeros((4, 3, 3, 3), np.float32), "k": np.zeros((4, 1, 3, 3), np.float32)}
    macs = nets.count_macs(arch, weights, (1, 3, 16, 20))
    assert macs["conv"] == 8 * 10 * 4 * 3 * 9
    assert macs["imex_matrix"] == 4 * 12 * (14 // 2 + 1) * (4 * 14 + 8 * 12)


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="unknown architecture 'unet'"):
        nets.build_model("unet")
    with pytest.raises(ValueError, match=r"unknown depth-network options \['widht'\]"):
        nets.build_model("imexnet-depth", widht=3)
    with pytest.raises(ValueError, match="boundary must be one of"):
        nets.build_model("imexnet-depth", boundary="zero")
    arch = {"name": "t", "input": "image", "output": "y",
            "nodes": [{"op": "relu", "inputs": ["nothing"], "output": "y"}]}
    with pytest.raises(ValueError, match="reads unknown"):
        nets.infer_shapes(arch, {}, (1, 3, 4, 4))


def test_qtips_parameter_counts_follow_the_reference_layout():
    counts = {arch: nets.count_parameters(nets.build_model(arch)) for arch in nets.QTIPS_ARCHS}
    # Opening/transition convs 1->64->128->256, 3 shared-kernel layers per stage, 1x1 head.
    resnet = 9 * (64 + 64 * 128 + 128 * 256) + 3 * 9 * (64**2 + 128**2 + 256**2) + 256 * 4
    assert counts["qtips-resnet"] == counts["qtips-bn"] == resnet
    assert counts["qtips-imexnet"] - resnet == 3 * 9 * (64 + 128 + 256)


@pytest.mark.parametrize("arch", nets.QTIPS_ARCHS)
def test_qtips_nets_give_logits_and_describe_the_adjoint_as_a_conv(arch):
    torch.manual_seed(4)
    model = nets.build_model(arch, widths=[4, 8], layers=1, boundary="reflect", pad=4)
    model(torch.rand(3, 1, 16, 16))  # a training-mode pass moves the running statistics
    model.eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 4, 16, 16)
    arch_d, weights = model.describe()
    assert arch_d["output"] == "logits"
    layer = model.body[1]
    y = torch.randn(1, 4, 8, 8)
    k = layer.effective_kernel().detach()
    want = torch.nn.functional.conv_transpose2d(y, k, padding=1)
    got = torch.nn.functional.conv2d(y, torch.from_numpy(weights["body.1.kt.weight"]), padding=1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert ("imex" in {n["op"] for n in arch_d["nodes"]}) == (arch == "qtips-imexnet")
    assert ("affine" in {n["op"] for n in arch_d["nodes"]}) == (arch != "qtips-resnet")
