"""The model zoo: the CIFAR architectures of the knowledge-distillation (CRD) benchmark.

``create_model(name, num_classes, in_channels=..., image_size=...)`` returns a
``NormalizedClassifier`` that takes images in [0, 1]: ``model.normalize`` then ``model.net``.
Every architecture takes 1- or 3-channel input and ends in global average pooling, so 28x28,
32x32 and larger images all work.

Layer names, for forward hooks (prefix ``net.``):

- ResNets (``resnet_cifar``, ``resnet_imagenet_style``): ``conv1``, ``bn1``, ``relu``,
  ``layer1`` .. ``layer3`` (``layer4``), blocks ``layerK.i`` with ``conv1/bn1/conv2/bn2``
  (``conv3/bn3``) and ``downsample``; ``avgpool``, ``fc``.
- WRN: ``conv1``, ``layer1`` .. ``layer3`` (pre-activation blocks: ``bn1``, ``conv1``, ``bn2``,
  ``conv2``, ``shortcut``), ``bn``, ``relu``, ``avgpool``, ``fc``.
- VGG: conv groups ``block0`` .. ``block4`` (conv-BN-ReLU), ``pool0`` .. ``pool3``, ``avgpool``,
  ``classifier``.
- MobileNetV2: ``conv1``, ``blocks.S.i.conv``, ``conv2``, ``avgpool``, ``classifier``.
- ShuffleNets: ``conv1``, ``bn1``, ``layer1`` .. ``layer3``, (V2: ``conv2``, ``bn2``), ``avgpool``,
  ``fc``.

- ``jpegdl_<arch>``: the same names behind ``input_layer`` (a :class:`robust_kd.jpeg.JpegLayer`
  with ``luma_table`` / ``chroma_table``), which runs before ``normalize``.

No activation runs in place, so a tensor kept by a hook is never overwritten later.
"""

# Importing the architecture modules registers their names.
from robust_kd.models import (  # noqa: F401
    mobilenetv2,
    resnet_cifar,
    resnet_imagenet_style,
    shufflenet_v1,
    shufflenet_v2,
    vgg,
    wrn,
)
from robust_kd.models import jpegdl  # noqa: F401,E402  (after the architectures: wraps each of them)
from robust_kd.models.complexity import model_complexity
from robust_kd.models.normalize import Normalize, NormalizedClassifier
from robust_kd.models.registry import create_model, has_input_layer, list_models, model_family, register_model

__all__ = [
    "Normalize",
    "NormalizedClassifier",
    "create_model",
    "has_input_layer",
    "list_models",
    "model_complexity",
    "model_family",
    "register_model",
]
