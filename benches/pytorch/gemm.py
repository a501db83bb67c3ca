"""MKL's sgemm (PyTorch's CPU BLAS) on the shapes of `cargo bench --bench gemm`.

GFLOP/s (2mnk / t) of `torch.mm(a, b, out=c)` into a preallocated C, with
the transposed forms as transposed views (MKL reads them in place): the
median over 7 rounds of 2 GFLOP of calls each, after one warm-up round.
Shapes are m x k x n, as in the bench's table. Not part of the build or the
tests; run it as `benches/pytorch/epochs.py` says, e.g.

    .venv-torch/bin/python benches/pytorch/gemm.py --threads 1
"""
import argparse
import statistics
import time

import torch

SHAPES = [
    (128, 784, 900, "N", "N"),
    (128, 900, 625, "N", "N"),
    (128, 625, 400, "N", "N"),
    (128, 400, 10, "N", "N"),
    (128, 180, 100, "N", "N"),
    (784, 128, 900, "T", "N"),
    (128, 900, 784, "N", "T"),
    (1024, 1024, 1024, "N", "N"),
    (64, 784, 900, "N", "N"),
    (64, 900, 784, "N", "N"),
    (784, 64, 900, "T", "N"),
    (64, 900, 784, "N", "T"),
]
FORMS = {("N", "N"): "A B", ("T", "N"): "A^T B", ("N", "T"): "A B^T"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    for m, k, n, ta, tb in SHAPES:
        a = torch.rand(k, m).t() if ta == "T" else torch.rand(m, k)
        b = torch.rand(n, k).t() if tb == "T" else torch.rand(k, n)
        c = torch.empty(m, n)
        flop = 2 * m * n * k
        calls = max(3, int(2e9 / flop))
        rounds = []
        for _ in range(8):
            start = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b, out=c)
            rounds.append((time.perf_counter() - start) / calls)
        per_call = statistics.median(rounds[1:])
        print(f"{m}x{k}x{n:<8} {FORMS[(ta, tb)]:6s} {flop / per_call / 1e9:7.1f} GFLOP/s")


if __name__ == "__main__":
    main()
