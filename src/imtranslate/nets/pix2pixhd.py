"""pix2pixHD (Wang et al. 2018): coarse-to-fine generator and the instance-wise feature encoder."""
from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn as nn

from ..ops import crop_to, pad_to_multiple
from .layers import ConvNormAct, down_block, downsample_avg, output_head, res_blocks, up_block
from .registry import init_config, register_net
from .resnet_gen import ResNetGenerator


class LocalEnhancer(nn.Module):
    """One local enhancer G2 working at twice the resolution of what it enhances.

    ``front``: 7x7 conv + one stride-2 conv, (B, C_in, H, W) -> (B, 2*ngf, H/2, W/2), whose
    output is ADDED to the coarser generator's last features; ``back``: residual blocks and a
    transposed conv, -> (B, ngf, H, W); ``head``: 7x7 conv + tanh, used only when this is the
    finest active enhancer.
    """

    def __init__(self, in_channels: int, out_channels: int, ngf: int, n_blocks: int, norm: str):
        super().__init__()
        self.front = nn.Sequential(
            ConvNormAct(in_channels, ngf, 7, pad_mode="reflect", norm=norm),
            down_block(ngf, 2 * ngf, norm=norm),
        )
        self.back = nn.Sequential(
            *res_blocks(2 * ngf, n_blocks, norm=norm),
            up_block(2 * ngf, ngf, norm=norm),
        )
        self.head = output_head(ngf, out_channels)


@register_net("pix2pixhd")
class Pix2PixHDGenerator(nn.Module):
    """Global generator G1 plus ``n_local_enhancers`` local enhancers G2.

    G1 is a :class:`ResNetGenerator` of width ``ngf * 2**n_local_enhancers`` that sees the
    input average-pooled ``n_local_enhancers`` times. Enhancer e (1 = coarsest) has width
    ``ngf * 2**(n_local_enhancers - e)`` and sees the input pooled ``n_local_enhancers - e``
    times; its front features are added to the features of the level below (G1 without its
    output head, or the previous enhancer without its head).

    Coarse-to-fine training: :meth:`set_active_enhancers` ``(k)`` uses G1 and the first k
    enhancers; the output is then at the input size divided by :meth:`output_scale`
    (``2**(n_local_enhancers - k)``, rounded up like :func:`downsample_avg`). k = 0 is G1
    alone with its own head. The full model (k = n_local_enhancers) is the default. Heads of
    the levels that are not the finest active one get no gradient.

    ``ngf`` is the width of the finest enhancer; its default 32 is pix2pixHD's 2048x1024
    recipe and gives G1 1024-wide residual blocks (ngf = 64 would make them 2048 wide).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 32,
        n_downsampling: int = 4,
        n_blocks: int = 9,
        n_local_enhancers: int = 1,
        n_blocks_local: int = 3,
        norm: str = "instance",
    ):
        super().__init__()
        self.config = init_config(locals())
        n = n_local_enhancers
        self.global_net = ResNetGenerator(
            in_channels=in_channels, out_channels=out_channels, ngf=ngf * 2**n,
            n_downsampling=n_downsampling, n_blocks=n_blocks, norm=norm,
        )
        self.enhancers = nn.ModuleList(
            LocalEnhancer(in_channels, out_channels, ngf * 2 ** (n - e), n_blocks_local, norm) for e in range(1, n + 1)
        )
        self.multiple = 2 ** (n_downsampling + n)  # inputs are padded to a multiple of this
        # output size / input size of the whole net (with fewer active enhancers, during the
        # global stage, the output is 1 / output_scale() of that; the task brings it to full size)
        self.scale = 1
        self.active_enhancers = n

    def set_active_enhancers(self, k: int) -> None:
        """Use G1 and the ``k`` coarsest enhancers (0 = G1 alone)."""
        n = len(self.enhancers)
        if not 0 <= k <= n:
            raise ValueError(f"active enhancers must be in 0..{n}, got {k}")
        self.active_enhancers = k

    def run_state(self) -> dict:
        """What the weights do not carry: how many enhancers are active (saved in checkpoints)."""
        return {"active_enhancers": self.active_enhancers}

    def load_run_state(self, state: dict) -> None:
        self.set_active_enhancers(int(state.get("active_enhancers", self.active_enhancers)))

    def output_scale(self) -> int:
        """By how much the output is smaller than the input with the current active enhancers."""
        return 2 ** (len(self.enhancers) - self.active_enhancers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        feat, head = self.features(pad_to_multiple(x, self.multiple))
        s = self.output_scale()
        return crop_to(head(feat), (h, w), Fraction(1, s))  # (B, C_out, ceil(H/s), ceil(W/s))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, nn.Module]:
        """The finest active level's features of an input already padded to ``multiple``, and the
        head that turns them into the picture (vid2vid adds its own heads on these features)."""
        n, k = len(self.enhancers), self.active_enhancers
        inputs = [x]  # inputs[j]: (B, C_in, H'/2**j, W'/2**j)
        for _ in range(n):
            inputs.append(downsample_avg(inputs[-1]))

        feat = self.global_net.body(inputs[n])  # (B, ngf*2**n, H'/2**n, W'/2**n)
        head = self.global_net.head
        for e, enhancer in enumerate(self.enhancers[:k], start=1):
            feat = enhancer.back(enhancer.front(inputs[n - e]) + feat)  # (B, ngf*2**(n-e), H'/2**(n-e), ...)
            head = enhancer.head
        return feat, head


def instance_mean_features(feat: torch.Tensor, inst: torch.Tensor) -> torch.Tensor:
    """Replace every pixel's feature by the mean over its instance, image by image.

    ``feat`` (B, C, H, W) float, ``inst`` (B, H, W) integer ids (any values). Pixels with the
    same id in different images of the batch are different instances. Vectorised: one
    ``unique`` over (image, id) keys and two ``index_add_``; differentiable w.r.t. ``feat``.
    """
    b, c, h, w = feat.shape
    if inst.shape != (b, h, w):
        raise ValueError(f"instance map must be (B, H, W) = {(b, h, w)}, got {tuple(inst.shape)}")
    inst = inst.long()
    inst = inst - inst.amin()  # ids >= 0 so (image, id) pairs map to distinct keys
    image_index = torch.arange(b, device=inst.device).view(b, 1, 1)
    keys = (image_index * (inst.amax() + 1) + inst).flatten()  # (B*H*W,)
    _, group = torch.unique(keys, return_inverse=True)  # (B*H*W,) in 0..G-1
    n_groups = int(group.max()) + 1
    values = feat.permute(0, 2, 3, 1).reshape(-1, c)  # (B*H*W, C)
    sums = values.new_zeros(n_groups, c).index_add_(0, group, values)  # (G, C)
    counts = values.new_zeros(n_groups).index_add_(0, group, values.new_ones(group.shape[0]))  # (G,)
    means = sums / counts.unsqueeze(1)
    return means[group].reshape(b, h, w, c).permute(0, 3, 1, 2)  # (B, C, H, W)


@register_net("pix2pixhd_encoder")
class InstanceFeatureEncoder(nn.Module):
    """pix2pixHD's feature encoder E: a conv encoder-decoder (a :class:`ResNetGenerator` with no
    residual blocks) whose (B, feat_channels, H, W) output is averaged within every instance.

    The features, one low-dimensional vector per instance, are concatenated to the generator
    input; clustering them per class lets a user pick the look of each object at test time.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        feat_channels: int = 3,
        ngf: int = 16,
        n_downsampling: int = 4,
        norm: str = "instance",
    ):
        super().__init__()
        self.config = init_config(locals())
        self.net = ResNetGenerator(
            in_channels=in_channels, out_channels=feat_channels, ngf=ngf,
            n_downsampling=n_downsampling, n_blocks=0, norm=norm,
        )
        self.multiple = self.net.multiple
        self.scale = 1  # one feature vector per input pixel

    def forward(self, image: torch.Tensor, inst: torch.Tensor) -> torch.Tensor:
        """``image`` (B, C_in, H, W), ``inst`` (B, H, W) ids -> (B, feat_channels, H, W)."""
        return instance_mean_features(self.net(image), inst)
