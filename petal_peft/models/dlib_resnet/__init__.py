"""dlib's ResNet face descriptor network as a PyTorch module (a teacher and reference recogniser, not an Auto model).

:func:`petal_peft.convert.dlib_resnet.load_dlib_face_resnet` builds it from dlib's ``.dat`` file.
"""

from .modeling_dlib_resnet import DlibFaceResNet, DlibResidualUnit, add_zero_padded

__all__ = ["DlibFaceResNet", "DlibResidualUnit", "add_zero_padded"]
