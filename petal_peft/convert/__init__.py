"""Converting face-recognition checkpoints from other code bases into petal-peft's transformers models + adapters.

* :func:`convert_petalface_checkpoint`: a released PETALface Swin ``model.pt`` (pretrained or fine-tuned), or a
  PETALface IResNet LoRA checkpoint;
* :func:`convert_insightface_vit`: an insightface arcface_torch ViT (vit_t / vit_s / vit_b, with or without the
  PETALface LoRA);
* :func:`convert_insightface_iresnet`: an insightface arcface_torch IResNet ``backbone.pth`` (18 / 34 / 50 / 100 /
  200).

Files are read only with ``torch.load(weights_only=True)``; the command line is ``petal-peft convert``.
"""

from .common import CheckpointFormatError, ConversionResult, push_converted, read_state_dict
from .insightface import convert_insightface_vit
from .iresnet import convert_insightface_iresnet
from .petalface import convert_petalface_checkpoint

__all__ = [
    "CheckpointFormatError",
    "ConversionResult",
    "convert_insightface_iresnet",
    "convert_insightface_vit",
    "convert_petalface_checkpoint",
    "push_converted",
    "read_state_dict",
]
