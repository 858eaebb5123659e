"""Seeded fractal DEMs for the terrain benchmark.

Spectral synthesis: white Gaussian noise shaped in the Fourier domain to an amplitude
spectrum ~ f**-(hurst + 1) (a fractional Brownian surface with Hurst exponent
``hurst``), then scaled to the requested relief (max - min, metres). Deterministic:
the same arguments give the same bytes (numpy PCG64). Memory: about 40 bytes per
sample (complex FFT buffers).
"""

from __future__ import annotations

import numpy as np


def fractal_dem(
    size: int = 1025,
    relief: float = 600.0,
    hurst: float = 0.7,
    seed: int = 5,
    base: float = 100.0,
) -> np.ndarray:
    """A (size, size) float64 fractal height field in metres, from ``base`` to
    ``base + relief``."""
    if size < 2:
        raise ValueError("size must be >= 2")
    rng = np.random.Generator(np.random.PCG64(seed))
    n = size
    noise = rng.standard_normal((n, n))
    spec = np.fft.rfft2(noise)
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    amp = f ** -(hurst + 1.0)
    amp[0, 0] = 0.0
    z = np.fft.irfft2(spec * amp, s=(n, n))
    z -= z.min()
    z *= relief / z.max()
    return z + base
