"""Dynamic mask head: the batched matrix products equal an explicit per-instance loop over the 169 layout."""
import torch
import torch.nn.functional as F

from crossvis.threads import MeasuredChoice
from crossvis.heads import DynamicMaskHead, aligned_bilinear

SOI = [64.0, 128.0, 256.0, 512.0, 1024.0]


def _explicit(mask_feats, stride, params, locations, levels, im_inds):
    """Three F.conv2d per instance from [W0(80) | W1(64) | W2(8) | b0(8) | b1(8) | b2(1)]."""
    _, _, h, w = mask_feats.shape
    ys, xs = torch.meshgrid(torch.arange(h) * stride + stride // 2, torch.arange(w) * stride + stride // 2,
                            indexing="ij")
    outs = []
    for p, loc, lvl, b in zip(params, locations, levels, im_inds):
        soi = SOI[int(lvl)]
        rel = torch.stack([(loc[0] - xs) / soi, (loc[1] - ys) / soi]).to(mask_feats.dtype)
        x = torch.cat([rel, mask_feats[b]])[None]                     # [1, 10, h, w]
        w0, w1, w2 = p[:80].reshape(8, 10, 1, 1), p[80:144].reshape(8, 8, 1, 1), p[144:152].reshape(1, 8, 1, 1)
        b0, b1, b2 = p[152:160], p[160:168], p[168:169]
        x = F.relu(F.conv2d(x, w0, b0))
        x = F.relu(F.conv2d(x, w1, b1))
        x = F.conv2d(x, w2, b2)
        outs.append(aligned_bilinear(x, 2)[0, 0])
    return torch.stack(outs)


def test_num_params():
    assert DynamicMaskHead(SOI).num_params == 169
    assert DynamicMaskHead(SOI, rel_coords=False).num_params == 8 * 8 + 8 + 64 + 8 + 8 + 1


def test_batched_equals_explicit_loop():
    g = torch.Generator().manual_seed(0)
    head = DynamicMaskHead(SOI)
    mask_feats = torch.randn(2, 8, 6, 10, generator=g, dtype=torch.float64)
    n = 7
    params = torch.randn(n, 169, generator=g, dtype=torch.float64)
    locations = torch.rand(n, 2, generator=g, dtype=torch.float64) * 80
    levels = torch.randint(0, 5, (n,), generator=g)
    im_inds = torch.randint(0, 2, (n,), generator=g)
    out = head(mask_feats.double(), 8, params, locations, levels, im_inds)
    assert out.shape == (n, 12, 20)
    torch.testing.assert_close(out, _explicit(mask_feats, 8, params, locations, levels, im_inds))


def test_relative_coordinates_x_then_y():
    # One linear layer reading only channel 0 (rel_x) or 1 (rel_y); no upsampling (out_stride = 8).
    head = DynamicMaskHead([64.0, 128.0], num_layers=1, out_stride=8)
    assert head.num_params == 10 + 1
    feats = torch.zeros(1, 8, 2, 3)
    params = torch.zeros(2, 11)
    params[0, 0] = 1.0  # rel_x
    params[1, 1] = 1.0  # rel_y
    loc = torch.tensor([[20.0, 12.0], [20.0, 12.0]])
    out = head(feats, 8, params, loc, torch.tensor([1, 0]), torch.tensor([0, 0]))
    expected_x = torch.tensor([[20 - 4, 20 - 12, 20 - 20]] * 2) / 128.0
    expected_y = torch.tensor([[12 - 4] * 3, [12 - 12] * 3]) / 64.0
    torch.testing.assert_close(out[0], expected_x)
    torch.testing.assert_close(out[1], expected_y)


def test_no_instances():
    out = DynamicMaskHead(SOI)(torch.randn(1, 8, 4, 4), 8, torch.zeros(0, 169), torch.zeros(0, 2),
                               torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
    assert out.shape == (0, 8, 8)


def test_chunks_of_instances_equal_explicit_loop():
    # A chunk budget of 3 instances at 6×10 splits 7 instances into 3 batched matmuls.
    g = torch.Generator().manual_seed(1)
    head = DynamicMaskHead(SOI)
    head.CHUNK_ELEMENTS = 3 * 10 * 6 * 10
    mask_feats = torch.randn(2, 8, 6, 10, generator=g, dtype=torch.float64)
    params = torch.randn(7, 169, generator=g, dtype=torch.float64)
    locations = torch.rand(7, 2, generator=g, dtype=torch.float64) * 80
    levels = torch.randint(0, 5, (7,), generator=g)
    im_inds = torch.randint(0, 2, (7,), generator=g)
    out = head(mask_feats, 8, params, locations, levels, im_inds)
    torch.testing.assert_close(out, _explicit(mask_feats, 8, params, locations, levels, im_inds))


def test_chunk_size_is_measured_on_large_calls_only_and_changes_no_value():
    """Without a fixed CHUNK_ELEMENTS the head times its CHUNK_CHOICES on calls they split
    differently (each TRIALS times), keeps one, and every choice gives the loop's values."""
    g = torch.Generator().manual_seed(3)
    head = DynamicMaskHead(SOI)
    head.CHUNK_CHOICES = (3 * 10 * 6 * 10, 7 * 10 * 6 * 10)            # 3 or 7 instances per matmul
    head._chunk_choice = MeasuredChoice(head.CHUNK_CHOICES, "test")
    mask_feats = torch.randn(1, 8, 6, 10, generator=g, dtype=torch.float64)
    params = torch.randn(7, 169, generator=g, dtype=torch.float64)
    locations = torch.rand(7, 2, generator=g, dtype=torch.float64) * 80
    levels = torch.randint(0, 5, (7,), generator=g)
    zeros = torch.zeros(7, dtype=torch.int64)
    expected = _explicit(mask_feats, 8, params, locations, levels, zeros)
    for _ in range(3):  # 2 instances fit either chunk: not timed
        head(mask_feats, 8, params[:2], locations[:2], levels[:2], zeros[:2])
    assert head._chunk_choice.chosen is None and not any(head._chunk_choice._timings.values())
    with torch.inference_mode():
        for _ in range(2 * MeasuredChoice.TRIALS):
            assert head._chunk_choice.chosen is None
            torch.testing.assert_close(head(mask_feats, 8, params, locations, levels, zeros), expected)
    assert [len(t) for t in head._chunk_choice._timings.values()] == [MeasuredChoice.TRIALS] * 2
    with torch.inference_mode():
        torch.testing.assert_close(head(mask_feats, 8, params, locations, levels, zeros), expected)
    assert head._chunk_choice.chosen in head.CHUNK_CHOICES


def test_training_path_equals_explicit_loop_in_values_and_gradients():
    """With gradients the head runs one grouped convolution (the official form); values and
    gradients equal the per-instance loop and the batched-matmul inference path."""
    g = torch.Generator().manual_seed(2)
    head = DynamicMaskHead(SOI)
    mask_feats = torch.randn(2, 8, 6, 10, generator=g, dtype=torch.float64, requires_grad=True)
    params = torch.randn(5, 169, generator=g, dtype=torch.float64, requires_grad=True)
    locations = torch.rand(5, 2, generator=g, dtype=torch.float64) * 80
    levels = torch.randint(0, 5, (5,), generator=g)
    im_inds = torch.randint(0, 2, (5,), generator=g)
    out = head(mask_feats, 8, params, locations, levels, im_inds)
    grads = torch.autograd.grad(out.square().sum(), (mask_feats, params))
    expected = _explicit(mask_feats, 8, params, locations, levels, im_inds)
    expected_grads = torch.autograd.grad(expected.square().sum(), (mask_feats, params))
    torch.testing.assert_close(out, expected)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
    with torch.no_grad():
        torch.testing.assert_close(head(mask_feats, 8, params, locations, levels, im_inds), out.detach())


def _case(seed, n, images, dtype):
    g = torch.Generator().manual_seed(seed)
    mask_feats = torch.randn(images, 8, 12, 20, generator=g, dtype=torch.float64)
    params = torch.randn(n, 169, generator=g, dtype=torch.float64)
    locations = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([160.0, 96.0], dtype=torch.float64)
    levels = torch.randint(0, 5, (n,), generator=g)
    im_inds = torch.randint(0, images, (n,), generator=g)
    return mask_feats.to(dtype), params.to(dtype), locations.float(), levels, im_inds


def test_one_image_inference_path_equals_the_explicit_loop_in_float32():
    """One image (the online predictor's case): layer 0 is one matrix product over the shared
    ``[feats; grid]`` with the coordinates folded into the bias; it equals the explicit loop on
    relative coordinates computed per pixel (float64) to float32 rounding."""
    head = DynamicMaskHead(SOI)
    feats, params, locations, levels, im_inds = _case(3, 9, 1, torch.float32)
    with torch.inference_mode():
        out = head(feats, 8, params, locations, levels, im_inds)
    expected = _explicit(feats.double(), 8, params.double(), locations.double(), levels, im_inds)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-4)

