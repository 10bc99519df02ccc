"""Reader of the IDX file format of the MNIST files, for users with MNIST-style data.

:func:`load_mnist_idx` returns arrays ready for :func:`skcl.datasets.make_split_stream`;
both functions are also importable from :mod:`skcl.datasets`.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

__all__ = ["load_idx", "load_mnist_idx"]

#: IDX type codes (third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an array stored in the IDX format of the MNIST files.

    An IDX file starts with a 4-byte magic number (two zero bytes, a type
    code, the number of dimensions), then one big-endian 32-bit size per
    dimension, then the values in row-major order, big-endian. Gzipped files
    (``*.gz``, recognised by their content) are decompressed.

    Parameters
    ----------
    path : str or path-like
        File to read.

    Returns
    -------
    array : ndarray
        The values with their stored dtype (uint8, int8, int16, int32,
        float32 or float64) in native byte order and the stored shape.

    Raises
    ------
    ValueError
        On a malformed file: bad magic number or type code, wrong data length, broken gzip.

    Examples
    --------
    >>> import os, struct, tempfile
    >>> from skcl.idx import load_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.idx1-ubyte")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 3) + bytes([7, 2, 1]))
    >>> load_idx(path).tolist()
    [7, 2, 1]
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{os.fspath(path)}: broken gzip data ({exc}).") from exc
    where = os.fspath(path)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES or raw[3] < 1:
        raise ValueError(
            f"{where} is not an IDX file: bad magic number {raw[:4].hex() or '(empty file)'} "
            "(expected 0000, a type code in 08 09 0b 0c 0d 0e, and a dimension count >= 1)."
        )
    code, ndim = raw[2], raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ValueError(f"{where}: IDX header truncated.")
    shape = struct.unpack(f">{ndim}I", raw[4:offset])
    dtype = np.dtype(_IDX_DTYPES[code])
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(
            f"{where}: IDX header announces shape {shape} ({count * dtype.itemsize} bytes of "
            f"data) but the file holds {len(raw) - offset} bytes of data."
        )
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def load_mnist_idx(
    images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST-format image file and its label file.

    Parameters
    ----------
    images_path : str or path-like
        IDX file of unsigned-byte images, shape (n, height, width) or
        (n, height, width, channels), e.g. ``train-images-idx3-ubyte.gz``.
    labels_path : str or path-like
        IDX file of n labels, e.g. ``train-labels-idx1-ubyte.gz``.

    Returns
    -------
    X : ndarray of shape (n, height * width * ...), dtype float32
        Pixels scaled to [0, 1], one flattened image per row.
    y : ndarray of shape (n,), dtype int64
        Labels.

    Examples
    --------
    >>> import os, struct, tempfile
    >>> from skcl.idx import load_mnist_idx
    >>> folder = tempfile.mkdtemp()
    >>> images, labels = os.path.join(folder, "images"), os.path.join(folder, "labels")
    >>> with open(images, "wb") as f:
    ...     _ = f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 1, 2) + bytes([0, 255, 51, 0]))
    >>> with open(labels, "wb") as f:
    ...     _ = f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + bytes([3, 5]))
    >>> X, y = load_mnist_idx(images, labels)
    >>> X.tolist(), y.tolist()
    ([[0.0, 1.0], [0.20000000298023224, 0.0]], [3, 5])
    """
    images, labels = load_idx(images_path), load_idx(labels_path)
    if images.ndim < 2 or images.dtype != np.uint8:
        raise ValueError(
            f"{os.fspath(images_path)}: expected unsigned-byte images of shape (n, height, "
            f"width), got dtype {images.dtype} and shape {images.shape}."
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{len(images)} images but labels of shape {labels.shape}.")
    X = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    return X, labels.astype(np.int64)
