"""Numpy arrays <-> bytes, for what travels between Ray Data stages.

Rows carry plain Python values and ``bytes``; arrays of varying shape (model inputs of
different depths, calcium summaries) are packed with `np.savez`, so Ray never needs its
tensor extension types and nothing depends on how it batches ragged arrays.
"""

from __future__ import annotations

import io

import numpy as np


def pack(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def unpack(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
