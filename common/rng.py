"""A counter-based random number generator: every draw is a hash of integers (a row's key, the NFE
spent, a position), so a row's randomness never depends on batching, sharding or the other rows."""
import torch


def fmix32(h):
    """MurmurHash3's 32-bit finaliser on int64 tensors (a counter-based random number generator)."""
    M = 0xFFFFFFFF
    h = h & M
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) & M
    h = ((h ^ (h >> 13)) * 0xC2B2AE35) & M
    return h ^ (h >> 16)


def row_keys(seed, ids):
    """Random keys (B,) for rows identified by integers ids (B,) (e.g. problem index * G + member).
    """
    return fmix32(
        fmix32(torch.as_tensor(ids, dtype=torch.long))
        ^ fmix32(torch.tensor(seed, dtype=torch.long) + 0x9E37))


def noise_seeds(keys, nfe):
    """(b,) 63-bit seeds for the dLLM's Gumbel noise from (row key, NFE spent), salted apart from
    the policy's draws: a row's tokens at T > 0 never depend on batching, sharding or the other
    rows."""
    lo = fmix32(keys ^ fmix32(nfe + 0xD1CE))
    return (fmix32(lo ^ 0xB5297A4D) << 31) ^ lo
