"""A stable, vectorised 64-bit hash of Arrow arrays, for hash buckets, crosses and vocabulary lookup.

The values must be identical in every process, on every machine and in every
release (a model's embedding rows depend on them), so the hash is defined here
rather than borrowed from a library whose hash may change:

* integers (and booleans) are taken as int64, reinterpreted as uint64 and mixed with
  MurmurHash3's 64-bit finaliser (`fmix64`) after adding a constant;
* floats are hashed through their float64 bit pattern (with -0.0 folded into 0.0);
* strings are their UTF-8 bytes read as little-endian 8-byte words (zero padded);
  the state starts from the length and absorbs one word at a time via `fmix64`.

Everything runs as numpy operations over whole arrays: no Python loop per value.
Dictionary-encoded arrays hash only their dictionary and then gather.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HASH_NAME = "recplane-fmix64-v1"

_K1 = np.uint64(0xFF51AFD7ED558CCD)
_K2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STRING_SEED = np.uint64(0x27D4EB2F165667C5)
_FLOAT_TAG = np.uint64(0x165667B19E3779F9)
_S33 = np.uint64(33)
# Rows per chunk when hashing long strings: bounds the [rows, 8] gather matrices.
_STRING_CHUNK_BYTES = 1 << 24


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser over a uint64 array (returns a new array)."""
    return _fmix64_inplace(h.copy())


def _fmix64_inplace(h: np.ndarray) -> np.ndarray:
    """fmix64 computed in `h` itself, with one scratch array (fewer, smaller allocations)."""
    t = h >> _S33
    h ^= t
    h *= _K1
    np.right_shift(h, _S33, out=t)
    h ^= t
    h *= _K2
    np.right_shift(h, _S33, out=t)
    h ^= t
    return h


def hash_int64(values: np.ndarray) -> np.ndarray:
    """uint64 hashes of an int64 array."""
    with np.errstate(over="ignore"):
        return _fmix64_inplace(values.astype(np.int64, copy=False).view(np.uint64) + _GOLDEN)


def hash_float64(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.float64, copy=True)
    v[v == 0.0] = 0.0  # fold -0.0 into 0.0
    with np.errstate(over="ignore"):
        return _fmix64_inplace(v.view(np.uint64) ^ _FLOAT_TAG)


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 [n+1], data uint8) of a string/binary array, honouring its slice offset."""
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    off_type = np.dtype(np.int64) if large else np.dtype(np.int32)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_type, count=len(arr) + 1, offset=arr.offset * off_type.itemsize)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets.astype(np.int64), data


def _hash_strings(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    n = len(starts)
    h = np.bitwise_xor(lengths.astype(np.uint64) * _GOLDEN, _STRING_SEED)
    if n == 0:
        return h
    max_len = int(lengths.max())
    if max_len == 0:
        return _fmix64_inplace(h)
    if max_len <= 8 and int(lengths.min()) == max_len:
        # Fixed-width ids (hex digests, zero-padded numbers): one word per value, read in place.
        chars = data[starts[0] : starts[0] + n * max_len]
        if max_len == 8:
            word = chars.view("<u8")
        else:
            words = np.zeros((n, 8), dtype=np.uint8)
            words[:, :max_len] = chars.reshape(n, max_len)
            word = words.view("<u8")[:, 0]
        h ^= word + _GOLDEN
        return _fmix64_inplace(_fmix64_inplace(h))
    # An unaligned little-endian word at byte p is two aligned words spliced: the low one shifted right
    # by 8*(p % 8) bits, the next one shifted left by the rest (numpy makes a 64-bit shift 0).
    padded = np.zeros((len(data) + 23) // 8 * 8, dtype=np.uint8)
    padded[: len(data)] = data
    aligned = padded.view("<u8")
    for k in range(0, max_len, 8):
        pos = starts + k
        remaining = lengths - k
        active = remaining > 0
        if not active.all():
            pos = np.where(active, pos, 0)
        q = pos >> 3
        bits = (pos & 7).astype(np.uint64) << np.uint64(3)
        word = aligned[q] >> bits
        word |= aligned[q + 1] << (np.uint64(64) - bits)
        keep = np.clip(remaining, 0, 8).astype(np.uint64)
        mask = np.where(
            keep >= 8, np.uint64(0xFFFFFFFFFFFFFFFF), (np.uint64(1) << (keep * np.uint64(8))) - np.uint64(1)
        )
        word &= mask
        h = np.where(active, _fmix64_inplace(h ^ (word + _GOLDEN)), h)
    return _fmix64_inplace(h)


def hash_array(arr: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hashes [n], null mask bool [n]) of any supported Arrow array. Nulls hash to 0."""
    if isinstance(arr, pa.ChunkedArray):
        parts = [hash_array(c) for c in arr.chunks]
        if not parts:
            return np.zeros(0, np.uint64), np.zeros(0, bool)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    t = arr.type
    if pa.types.is_dictionary(t):
        dict_hashes, dict_nulls = hash_array(arr.dictionary)
        indices = arr.indices
        idx_nulls = _null_mask(indices)
        idx = pc.fill_null(indices, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        if len(dict_hashes) == 0:
            return np.zeros(len(arr), np.uint64), np.ones(len(arr), bool)
        nulls = idx_nulls | dict_nulls[idx]
        h = dict_hashes[idx]
        h[nulls] = 0
        return h, nulls
    nulls = _null_mask(arr)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        offsets, data = _string_buffers(arr)
        h = _hash_strings_chunked(offsets, data)
    elif pa.types.is_integer(t) or pa.types.is_boolean(t):
        h = hash_int64(pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False))
    elif pa.types.is_floating(t):
        h = hash_float64(pc.fill_null(arr.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False))
    elif pa.types.is_null(t):
        return np.zeros(len(arr), np.uint64), np.ones(len(arr), bool)
    else:
        raise TypeError(f"cannot hash values of type {t}: use integer, string, boolean or float columns")
    h[nulls] = 0
    return h, nulls


def _hash_strings_chunked(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    n = len(offsets) - 1
    if n == 0:
        return np.zeros(0, np.uint64)
    total = int(offsets[-1] - offsets[0])
    if total <= _STRING_CHUNK_BYTES:
        return _hash_strings(offsets - offsets[0], data[offsets[0] : offsets[-1]])
    out = np.empty(n, np.uint64)
    rows = max(1, int(n * _STRING_CHUNK_BYTES / total))
    for i in range(0, n, rows):
        o = offsets[i : i + rows + 1]
        out[i : i + rows] = _hash_strings(o - o[0], data[o[0] : o[-1]])
    return out


def combine(hashes: list[np.ndarray]) -> np.ndarray:
    """One hash for a tuple of values (crosses): order matters."""
    h = hashes[0].copy()
    with np.errstate(over="ignore"):
        for other in hashes[1:]:
            h = _fmix64_inplace(h * _K1 + other + _GOLDEN)
    return h


def _null_mask(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.zeros(len(arr), dtype=bool)
    return arr.is_null().to_numpy(zero_copy_only=False)
