"""Pure ``nn.Module`` networks, registered by name.

``build_net(name, **kwargs)`` builds any of them; every net keeps its constructor arguments in
``net.config`` (plain JSON types), so ``build_net(name, **net.config)`` rebuilds it from a
checkpoint. Generators map (B, C_in, H, W) to (B, C_out, scale * H, scale * W) in [-1, 1] for
any H, W; each declares ``multiple`` (inputs are padded to a multiple of it) and ``scale``
(output size / input size: 1 for every translator here, ``2**n_up`` for the inverse net);
discriminators return ``list[list[Tensor]]`` (scales x layer outputs, logits last).

* ``unet``: :class:`UNetGenerator`, the pix2pix U-Net
* ``resnet``: :class:`ResNetGenerator`, Johnson / CycleGAN ResNet generator
* ``pix2pixhd``: :class:`Pix2PixHDGenerator`, global generator + local enhancers
* ``pix2pixhd_encoder``: :class:`InstanceFeatureEncoder`, instance-averaged features
* ``multires``: :class:`MultiResGenerator`, the SPEC S1 multi-resolution generator
* ``patch``: :class:`PatchDiscriminator`, 70x70 PatchGAN
* ``multiscale``: :class:`MultiScaleDiscriminator`, pix2pixHD's multi-scale PatchGANs
* ``stylesr``: :class:`StyleSRNet`, stylise + super-resolve in one pass (SPEC S4), x2 / x4
* ``vid2vid``: :class:`Vid2VidGenerator`, one step of vid2vid's sequential generator (flow, mask, hallucination)
* ``face_enhancer``: :class:`FaceEnhancer`, encoder + mapping network + modulated-conv decoder
  (SPEC S5); ``face_discriminator``: :class:`FaceDiscriminator`
* ``style_inverse``: :class:`InverseNet`, style swap's decoder from VGG features (SPEC S3;
  the swap itself is pure functions in ``nets/style_swap.py``)

:class:`VGG19Features` (frozen, for the perceptual/style losses) is not registered: it is not
trained, so checkpoints need not hold it.
"""
from __future__ import annotations

from .discriminators import MultiScaleDiscriminator, PatchDiscriminator
from .face_enhancer import FaceDiscriminator, FaceEnhancer
from .inverse import InverseNet
from ..ops import crop_to, pad_to_multiple
from .layers import downsample_avg
from .multires import MultiResGenerator
from .pix2pixhd import InstanceFeatureEncoder, Pix2PixHDGenerator, instance_mean_features
from .registry import NETS, build_net, register_net
from .resnet_gen import ResNetGenerator
from .stylesr import StyleSRNet
from .unet import UNetGenerator
from .vid2vid import Vid2VidGenerator
from .vgg import VGG19Features, resolve_vgg_weights

__all__ = [
    "FaceEnhancer", "FaceDiscriminator",
    "NETS", "build_net", "register_net",
    "UNetGenerator", "ResNetGenerator", "Vid2VidGenerator", "Pix2PixHDGenerator", "InstanceFeatureEncoder", "MultiResGenerator", "StyleSRNet",
    "PatchDiscriminator", "MultiScaleDiscriminator", "InverseNet", "VGG19Features", "resolve_vgg_weights",
    "instance_mean_features", "downsample_avg", "pad_to_multiple", "crop_to",
]
from .face_parse import FaceParser  # noqa: E402  (registers "face_parser")
