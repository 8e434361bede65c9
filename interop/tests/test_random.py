"""The Python copy of Locus's seeded generator (locus_h5.torch.SplitMix64, which epoch_order and the
sampled estimators use) against the rules Sources/LocusRandom/SplitMix64.swift documents, computed
here without it."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "interop" / "python"))
from locus_h5.torch import SplitMix64, epoch_order  # noqa: E402

M64 = (1 << 64) - 1


def outputs(seed, n):
    """Outputs 1..n of SplitMix64(seed): mix(seed + k·γ) (Steele, Lea & Flood 2014)."""
    out = []
    for k in range(1, n + 1):
        z = (seed + k * 0x9E3779B97F4A7C15) & M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        out.append(z ^ (z >> 31))
    return out


def test_reference_outputs():
    g = SplitMix64(0)
    assert [g.next() for _ in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    assert outputs(0, 3) == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_below_rejects_the_short_remainder():
    bound, threshold = (1 << 63) + 1, (1 << 63) - 1           # 2**64 mod bound
    g, raw = SplitMix64(3), iter(outputs(3, 5000))
    rejected = 0
    for _ in range(1000):
        r = next(raw)
        while r < threshold:
            r, rejected = next(raw), rejected + 1
        assert g.below(bound) == r % bound
    assert rejected > 300


def test_below_has_no_modulo_bias():
    g, n = SplitMix64(17), 20000
    low = sum(g.below(3 << 62) < (1 << 62) for _ in range(n))
    assert abs(low / n - 1 / 3) < 0.015                        # plain modulo: 1/2


def test_epoch_order_is_the_plain_modulo_shuffle_at_training_sizes():
    """A draw below i + 1 is rejected with probability < (i + 1)/2**64, so the epoch orders of runs
    made before the rejection step are unchanged."""
    for seed, n in [(3, 40), (0, 5000)]:
        for epoch in range(2):
            g = SplitMix64.derived(seed, 0x5EED0000 + epoch)
            p = list(range(n))
            for i in range(n - 1, 0, -1):
                j = g.next() % (i + 1)
                p[i], p[j] = p[j], p[i]
            assert epoch_order(range(n), epoch, seed) == p
