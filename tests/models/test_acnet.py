"""ACNet blocks: a fused kernel worked by hand, folding against the unfolded forward (train-mode
statistics included), conversion counts, and the folded detector's size and cost."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from detkit.models.acnet import (
    ACBlock,
    convert_to_acnet,
    count_acblocks,
    fold_acnet,
)
from detkit.models.backbones.snet import snet49
from detkit.models.detectors.dense import dense_detector
from detkit.models.detectors.thundernet import thundernet_lite
from detkit.models.info import model_info


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _set_bn(bn: nn.BatchNorm2d, gamma: float, beta: float, mean: float, var: float) -> None:
    with torch.no_grad():
        bn.weight.fill_(gamma)
        bn.bias.fill_(beta)
        bn.running_mean.fill_(mean)
        bn.running_var.fill_(var)


def _hand_block() -> ACBlock:
    block = ACBlock(1, 1, 3, eps=0.0)
    with torch.no_grad():
        block.square.weight.fill_(1.0)
        block.hor.weight.copy_(torch.tensor([1.0, 2.0, 3.0]).reshape(1, 1, 1, 3))
        block.ver.weight.fill_(1.0)
    _set_bn(block.square_bn, 2.0, 1.0, 3.0, 4.0)  # scale 2 / sqrt(4) = 1, shift 1 - 3 = -2
    _set_bn(block.hor_bn, 1.0, 0.0, 0.0, 1.0)  # identity
    _set_bn(block.ver_bn, 3.0, -1.0, 1.0, 9.0)  # scale 3 / 3 = 1, shift -1 - 1 = -2
    return block.eval()


def test_fused_kernel_by_hand() -> None:
    block = _hand_block()
    kernel, bias = block.fused_kernel()
    # ones(3x3) + [1, 2, 3] on the middle row + [1, 1, 1] on the middle column
    expected = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 4.0], [1.0, 2.0, 1.0]])
    assert torch.equal(kernel[0, 0], expected)
    assert bias.tolist() == [-4.0]  # -2 + 0 - 2
    out = block(torch.ones(1, 1, 3, 3))
    # centre: square (9 - 3) * 1 + 1 = 7, hor 1 + 2 + 3 = 6, ver (3 - 1) * 1 - 1 = 1 -> 14
    # corner (0, 0): square (4 - 3) + 1 = 2, hor 2 + 3 = 5, ver (2 - 1) - 1 = 0 -> 7
    assert out[0, 0, 1, 1].item() == pytest.approx(14.0)
    assert out[0, 0, 0, 0].item() == pytest.approx(7.0)
    conv, bn = block.fold()
    folded = bn(conv(torch.ones(1, 1, 3, 3)))
    torch.testing.assert_close(folded, out, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("cin", "cout", "k", "stride", "groups"),
                         [(4, 6, 3, 1, 1), (5, 5, 5, 2, 5), (8, 8, 5, 1, 8), (3, 4, 3, 2, 1)])
@pytest.mark.parametrize("absorbed", [True, False])
def test_fold_equals_unfolded_after_training_mode_updates(cin: int, cout: int, k: int,
                                                          stride: int, groups: int,
                                                          absorbed: bool) -> None:
    torch.manual_seed(0)
    block = ACBlock(cin, cout, k, stride, groups, absorbed_bn=absorbed)
    for bn in (block.square_bn, block.hor_bn, block.ver_bn):
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
    block.train()
    for _ in range(5):  # training-mode passes move the running statistics away from 0 / 1
        block(torch.randn(4, cin, 11, 13) * 2 + 1)
    assert block.square_bn.running_mean.abs().max() > 0.1
    with pytest.raises(RuntimeError, match="eval"):
        block.fold()
    block.eval()
    x = torch.randn(2, cin, 11, 13)
    conv, bn = block.fold()
    assert (bn is not None) == absorbed and (conv.bias is None) == absorbed
    folded = conv(x) if bn is None else bn(conv(x))
    ref = block(x)
    assert folded.shape == ref.shape == nn.Conv2d(cin, cout, k, stride, k // 2)(x).shape
    assert (folded - ref).abs().max().item() < 1e-5


def test_convert_counts_and_round_trip_on_snet() -> None:
    torch.manual_seed(0)
    net = snet49()
    plain_keys = {k: v.shape for k, v in net.state_dict().items()}
    # conv1 (3x3) + 5x5 depthwise: stride-2 units 2 each, stride-1 units 1 each
    # stage2 2 + 3, stage3 2 + 7, stage4 2 + 3 -> 1 + 19 = 20
    assert convert_to_acnet(net) == 20
    assert count_acblocks(net) == 20 and isinstance(net.conv1[1], nn.Identity)
    x = torch.randn(1, 3, 64, 64)
    net.train()
    net(x)
    net.eval()
    with torch.no_grad():
        ref = net(x)
    assert fold_acnet(net) == 20 and count_acblocks(net) == 0
    assert {k: v.shape for k, v in net.state_dict().items()} == plain_keys
    with torch.no_grad():
        out = net(x)
    for name in ref:
        scale = max(1.0, ref[name].abs().max().item())
        assert (out[name] - ref[name]).abs().max().item() < 1e-5 * scale
    assert fold_acnet(net) == 0  # nothing left: a no-op


def test_fold_refuses_training_mode_network() -> None:
    net = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2))
    assert convert_to_acnet(net) == 1
    with pytest.raises(RuntimeError, match="running statistics"):
        fold_acnet(net.train())


def test_unfoldable_convs_are_left_alone() -> None:
    net = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 3, padding=2, dilation=2),
                        nn.Conv2d(2, 2, (3, 1), padding=(1, 0)), nn.Conv2d(2, 2, 3, padding=0))
    assert convert_to_acnet(net) == 0


def _rand_bn_stats(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def test_thundernet_acnet_folds_to_the_plain_model() -> None:
    torch.manual_seed(0)
    plain = thundernet_lite(3).eval()
    torch.manual_seed(0)
    model = thundernet_lite(3, acnet=True)
    assert count_acblocks(model) == 21  # SNet49's 20 + the RPN head's 5x5 depthwise
    model.eval()
    _rand_bn_stats(model)
    batch = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        ref = model.feature_map(batch)
        ref_rpn = model.rpn.head(ref)[0]
    fold_acnet(model)
    assert count_acblocks(model) == 0
    with torch.no_grad():
        out = model.feature_map(batch)
        out_rpn = model.rpn.head(out)[0]
    for a, b in ((out, ref), (out_rpn, ref_rpn)):
        assert (a - b).abs().max().item() < 1e-5 * max(1.0, b.abs().max().item())
    assert list(model.state_dict()) == list(plain.state_dict())
    # the R-CNN's cost follows the proposal count, so the plain model gets the same weights
    plain.load_state_dict(model.state_dict())  # strict: the same modules and shapes
    a, b = model_info(model, 64, runs=1, warmup=0), model_info(plain, 64, runs=1, warmup=0)
    assert a.params == b.params and a.macs == b.macs


def test_dense_detector_acnet_converts_the_towers_only() -> None:
    torch.manual_seed(0)
    plain = dense_detector(2, backbone="snet49", head_convs=2).eval()
    torch.manual_seed(0)
    model = dense_detector(2, backbone="snet49", head_convs=2, acnet=True)
    assert count_acblocks(model) == 20 + 4  # SNet49 + 2 convs in each of the two towers
    assert count_acblocks(model.head.cls_logits) == 0
    fold_acnet(model.eval())
    plain.load_state_dict(model.state_dict())
    a, b = model_info(model, 64, runs=1, warmup=0), model_info(plain, 64, runs=1, warmup=0)
    assert a.params == b.params and a.macs == b.macs


def test_a_convolution_that_is_the_last_child_is_converted_too() -> None:
    # conv + BN (absorbed, the BN becomes an Identity), then a last conv with nothing after it
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4),
                        nn.Conv2d(4, 4, 3, padding=1))
    assert convert_to_acnet(seq) == 2
    assert [type(m) for m in seq] == [ACBlock, nn.Identity, ACBlock]
    assert seq[0].absorbed_bn and not seq[2].absorbed_bn


def test_from_conv_keeps_the_batchnorm_momentum_and_the_weight_dtype() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(4, momentum=0.03)
    block = ACBlock.from_conv(conv, bn).train()
    x = torch.rand(2, 3, 8, 8)
    block(x)
    # fresh statistics (mean 0): after one step running_mean = 0.03 * the batch mean of each
    # branch's convolution output (0.1, the BatchNorm default, would differ)
    with torch.no_grad():
        for branch, norm in ((block.square, block.square_bn), (block.hor, block.hor_bn),
                             (block.ver, block.ver_bn)):
            torch.testing.assert_close(norm.running_mean, 0.03 * branch(x).mean(dim=(0, 2, 3)))
    # a float64 convolution gives a float64 block that runs on float64 input
    block64 = ACBlock.from_conv(conv.double()).eval()
    assert {p.dtype for p in block64.parameters()} == {torch.float64}
    assert block64(x.double()).dtype == torch.float64


def test_parts_of_a_module_without_detector_parts_are_none() -> None:
    from detkit.models.acnet import acnet_parts

    assert acnet_parts(nn.Sequential(nn.Conv2d(3, 4, 3))) == []
