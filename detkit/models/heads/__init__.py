"""Detection heads. :class:`DenseHead` is the RetinaNet-style head of the dense detector;
the ThunderNet heads live in their own modules (``rpn``, ``sam``, ``rcnn``)."""

from detkit.models.heads.dense import DenseHead

__all__ = ["DenseHead"]
