"""LKSMN: parameter count against hand arithmetic, MDTA against an independent float64 re-computation,
the receptive field of the multi-scale large kernel attention, shapes, batch independence, and training."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lightsr.models import create_model
from lightsr.models.lksmn import LKSMN, MDTA, LayerNorm2d, MultiScaleLKA

KERNELS = ((3, 5, 2), (5, 7, 3), (7, 9, 4))


def conv(cin: int, cout: int, k: int, groups: int = 1, bias: bool = True) -> int:
    """Parameters of a k×k Conv2d."""
    return cout * (cin // groups) * k * k + (cout if bias else 0)


def expected_params(scale: int, c: int = 48, blocks: int = 6, heads: int = 4, ratio: int = 2) -> int:
    """The count the architecture description implies, layer by layer (numbers for c=48 in comments)."""
    n = len(KERNELS)
    splits = [c // n] * (n - 1) + [c - (c // n) * (n - 1)]  # 16, 16, 16
    norms = 3 * 2 * c  # three LayerNorm2d with weight and bias: 288
    lka = sum(
        conv(g, g, k, groups=g) + conv(g, g, d, groups=g) + conv(g, g, 1)
        for g, (k, d, _) in zip(splits, KERNELS, strict=True)
    )  # (160 + 416 + 272) + (416 + 800 + 272) + (800 + 1312 + 272) = 848 + 1488 + 2384 = 4720
    msma = conv(c, c, 1) + lka + conv(c, c, 1) + conv(c, c, 1)  # A's 1×1, LKA, V, Proj: 3·2352 + 4720 = 11776
    mdta = (
        conv(c, 3 * c, 1, bias=False)  # 6912
        + conv(3 * c, 3 * c, 3, groups=3 * c, bias=False)  # 1296
        + conv(c, c, 1, bias=False)  # 2304
        + heads  # temperature: 4  -> 10516
    )
    h = ratio * c
    mlp = conv(c, h, 1) + conv(h, h, 3, groups=h) + conv(h, c, 1)  # 4704 + 960 + 4656 = 10320
    block = norms + msma + mdta + mlp  # 32900
    shallow = conv(3, c, 3)  # 1344
    mlfa = conv(blocks * c, c, 1) + conv(c, c, 3)  # 13872 + 20784 = 34656
    upsampler = conv(c, 3 * scale * scale, 3)  # ×2: 5196, ×3: 11691, ×4: 20784
    return shallow + blocks * block + mlfa + upsampler  # ×4: 1344 + 197400 + 34656 + 20784


@pytest.mark.parametrize(("scale", "count"), [(2, 238_596), (3, 245_091), (4, 254_184)])
def test_param_count_matches_hand_arithmetic(scale: int, count: int) -> None:
    model = LKSMN(scale=scale)
    assert expected_params(scale) == count
    assert model.num_trainable_params() == count
    if scale == 4:  # the paper reports 253K at ×4
        assert abs(count - 253_000) <= 0.02 * 253_000


def test_param_count_with_remainder_group() -> None:
    # 50 channels over 3 scales: groups of 16, 16 and 18; 5 heads so that MDTA divides evenly.
    model = LKSMN(scale=2, channels=50, num_blocks=2, heads=5)
    assert model.blocks[0].msma.a[2].splits == [16, 16, 18]
    assert model.num_trainable_params() == expected_params(2, c=50, blocks=2, heads=5)


def mdta_reference(x: torch.Tensor, mdta: MDTA) -> torch.Tensor:
    """Restormer's MDTA written out with einsum, shifted slices and an explicit softmax, head by head."""
    b, c, h, w = x.shape
    heads = mdta.heads
    d = c // heads
    w_qkv = mdta.qkv.weight[:, :, 0, 0]
    w_dw = mdta.qkv_dwconv.weight[:, 0]
    w_proj = mdta.proj.weight[:, :, 0, 0]

    qkv = torch.einsum("oc,bchw->bohw", w_qkv, x)
    padded = torch.zeros(b, 3 * c, h + 2, w + 2, dtype=x.dtype)
    padded[:, :, 1:-1, 1:-1] = qkv
    dw = torch.zeros_like(qkv)
    for i in range(3):  # cross-correlation, as Conv2d computes it
        for j in range(3):
            dw += w_dw[:, i, j][None, :, None, None] * padded[:, :, i : i + h, j : j + w]
    q, k, v = dw[:, :c], dw[:, c : 2 * c], dw[:, 2 * c :]

    outs = []
    for head in range(heads):
        sl = slice(head * d, (head + 1) * d)
        qh = q[:, sl].reshape(b, d, h * w)
        kh = k[:, sl].reshape(b, d, h * w)
        vh = v[:, sl].reshape(b, d, h * w)
        qh = qh / qh.pow(2).sum(-1, keepdim=True).sqrt()
        kh = kh / kh.pow(2).sum(-1, keepdim=True).sqrt()
        logits = torch.einsum("bin,bjn->bij", qh, kh) * mdta.temperature[head, 0, 0]
        e = torch.exp(logits - logits.amax(-1, keepdim=True))
        attn = e / e.sum(-1, keepdim=True)
        outs.append(torch.einsum("bij,bjn->bin", attn, vh))
    out = torch.cat(outs, dim=1).reshape(b, c, h, w)
    return torch.einsum("oc,bchw->bohw", w_proj, out)


@pytest.mark.parametrize("size", [(7, 5), (1, 1), (12, 16)])
def test_mdta_matches_float64_reference(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    mdta = MDTA(24, heads=4).double()
    with torch.no_grad():  # distinct per-head temperatures, so a head mix-up cannot pass
        mdta.temperature.copy_(torch.rand(4, 1, 1, dtype=torch.float64) * 3 + 0.5)
    x = torch.randn(2, 24, *size, dtype=torch.float64)
    with torch.no_grad():
        got = mdta(x)
        want = mdta_reference(x, mdta)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_layernorm2d_normalises_each_pixel_over_channels() -> None:
    torch.manual_seed(0)
    norm = LayerNorm2d(48).double()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(48, dtype=torch.float64))
        norm.bias.copy_(torch.randn(48, dtype=torch.float64))
    x = torch.randn(2, 48, 5, 7, dtype=torch.float64) * 4 + 3
    mean = x.mean(1, keepdim=True)
    var = ((x - mean) ** 2).mean(1, keepdim=True)
    want = (x - mean) / torch.sqrt(var + 1e-6) * norm.weight[:, None, None] + norm.bias[:, None, None]
    with torch.no_grad():
        torch.testing.assert_close(norm(x), want, rtol=0, atol=1e-12)


def test_multiscale_lka_receptive_field() -> None:
    """Group i's output at a pixel depends on exactly its own channels within radius (k-1)/2 + r·(d-1)/2."""
    torch.manual_seed(0)
    lka = MultiScaleLKA(48, KERNELS).double()
    radii = [(k - 1) // 2 + r * (d - 1) // 2 for k, d, r in KERNELS]
    assert radii == [5, 11, 19]  # 1 + 2·2, 2 + 3·3, 3 + 4·4
    size, centre = 45, 22
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    dist = torch.maximum((yy - centre).abs(), (xx - centre).abs())
    for group, radius in enumerate(radii):
        x = torch.randn(1, 48, size, size, dtype=torch.float64, requires_grad=True)
        lka(x)[0, group * 16 : (group + 1) * 16, centre, centre].sum().backward()
        grad = x.grad[0]
        own = torch.zeros(48, dtype=torch.bool)
        own[group * 16 : (group + 1) * 16] = True
        assert torch.all(grad[~own] == 0), "groups must not mix channels"
        reach = grad[own].abs().sum(0) != 0
        assert torch.equal(reach, dist <= radius), f"group {group}: not the radius-{radius} square"


def test_shapes_all_scales_and_batch_independence() -> None:
    torch.manual_seed(0)
    for scale in (2, 3, 4):
        model = LKSMN(scale=scale).eval()
        for h, w in [(1, 1), (7, 5), (37, 45)]:
            x = torch.rand(3, 3, h, w)
            with torch.no_grad():
                y = model(x)
                assert y.shape == (3, 3, scale * h, scale * w)
                assert torch.isfinite(y).all()
                if (h, w) == (7, 5):  # each image is processed on its own
                    torch.testing.assert_close(y[1:2], model(x[1:2]), rtol=1e-5, atol=1e-5)


def test_sgd_step_updates_every_parameter() -> None:
    torch.manual_seed(0)
    model = LKSMN(scale=2).train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.rand(2, 3, 10, 12)
    loss = F.mse_loss(model(x), torch.rand(2, 3, 20, 24))
    opt.zero_grad()
    loss.backward()
    opt.step()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.any(p.grad != 0), f"{name} got no gradient"
        assert not torch.equal(p.detach(), before[name]), f"{name} did not change"


def test_config_rebuilds_the_network() -> None:
    model = create_model("lksmn", scale=3)
    assert model.arch == "lksmn" and model.scale == 3
    config = json.loads(json.dumps(model.info.config))
    assert config == dict(scale=3, channels=48, num_blocks=6, heads=4, mlp_ratio=2.0,
                          kernels=[list(k) for k in KERNELS], in_channels=3)
    rebuilt = LKSMN(**config)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x), rtol=0, atol=0)
