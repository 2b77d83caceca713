"""detkit: a compact PyTorch object-detection toolkit for small objects and CPU budgets.

Subpackages are imported on demand (``detkit.ops``, ``detkit.losses``,
``detkit.data``, ``detkit.models``, ``detkit.engine``, ``detkit.evaluation``),
so importing one never pulls in the others.
"""

__version__ = "0.1.0"
