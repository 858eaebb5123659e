"""The result of a vertex renumbering (weld, fetch order): a mesh plus extras."""

from __future__ import annotations

import numpy as np


class MeshResult(tuple):
    """``(vertices, faces)``, unpackable as a 2-tuple (a subclass may add items after
    them, e.g. simplify's error), with extras:

    ``attributes``: the output vertices' attributes in the form they came in (same
    dtype and shape per array, a dict for a dict), or None when none were given;
    ``remap`` ((N,) int64): for every *input* vertex its index in the output
    vertices, or -1 when no output face uses it (a subclass may say otherwise).
    """

    attributes: object
    remap: np.ndarray

    def __new__(cls, vertices, faces, attributes, remap, *more):
        obj = super().__new__(cls, (vertices, faces, *more))
        obj.attributes = attributes
        obj.remap = remap
        return obj

    @property
    def vertices(self) -> np.ndarray:
        return self[0]

    @property
    def faces(self) -> np.ndarray:
        return self[1]

    def __repr__(self) -> str:
        a = self.attributes
        extra = "None" if a is None else (f"dict{sorted(a)}" if isinstance(a, dict) else a.shape)
        return (
            f"{type(self).__name__}(vertices={self[0].shape}, faces={self[1].shape}, "
            f"attributes={extra})"
        )
