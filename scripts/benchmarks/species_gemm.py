"""Species scoring's product, (B, D) x (S, D)^T, by numpy (OpenBLAS) and by
`animalclap_edge.similarity.SpeciesSimilarity` (onnxruntime MLAS, text matrix packed once).

    OPENBLAS_NUM_THREADS=1 python scripts/benchmarks/species_gemm.py --species 11000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from animalclap_edge.similarity import SpeciesSimilarity


def _ms_per_window(fn, batch: int, repeats: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats / batch * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--species", type=int, default=11_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    text = rng.standard_normal((a.species, a.dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    text_t = np.ascontiguousarray(text.T)  # numpy's layout before 2026-11-26
    sim = SpeciesSimilarity(text, threads=1)
    print(f"{a.species} species, D = {a.dim}, one thread; ms per window")
    for b in a.batches:
        emb = rng.standard_normal((b, a.dim)).astype(np.float32)
        np_ms = _ms_per_window(lambda e=emb: e @ text_t, b, a.repeats)
        ort_ms = _ms_per_window(lambda e=emb: sim(e), b, a.repeats)
        print(f"batch {b}: numpy {np_ms:.3f}, onnxruntime {ort_ms:.3f} ({np_ms / ort_ms:.1f}x)")


if __name__ == "__main__":
    main()
