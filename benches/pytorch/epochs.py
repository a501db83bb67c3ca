"""The `vcortex bench` items in PyTorch, timed on this machine.

The same work as each item of `vcortex bench` (batch 128, 468 batches of the
60000 training images, reshuffled every epoch): one epoch of the CNN with SGD
and with RMSProp, one epoch of the first DAE layer (784-900, tied weights,
10% masking noise, cross-entropy against the clean image), one epoch of the
five-layer classifier 784-900-625-400-10, and the CNN's inference over the
10000 test images. Seconds per epoch: the median of --epochs timed epochs
after one untimed warm-up epoch.

Not part of the build or the tests. To run it:

    python3 -m venv .venv-torch
    .venv-torch/bin/pip install torch==2.15.0 numpy
    .venv-torch/bin/python benches/pytorch/epochs.py --threads 2

Differences that do not change the work: PyTorch's RMSProp adds the weight
decay to the gradient before the division (the study adds it after); the
DAE's cost uses `binary_cross_entropy_with_logits` on the decoder's
pre-activation; inference runs in batches of 1000.
"""
import argparse
import gzip
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ITEMS = ["cnn-sgd", "cnn-rmsprop", "dae1", "mlp", "cnn-infer"]
BATCH = 128


def idx_file(path: Path, header: int) -> np.ndarray:
    return np.frombuffer(gzip.open(path).read(), dtype=np.uint8, offset=header)


class Cnn(nn.Module):
    """28x28 -> conv 15@9x9 -> ReLU -> pool 2 -> conv 20@5x5 -> ReLU -> pool 2 -> 180 -> 100 -> 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 15, 9)
        self.conv2 = nn.Conv2d(15, 20, 5)
        self.fc1 = nn.Linear(180, 100)
        self.fc2 = nn.Linear(100, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class Mlp(nn.Module):
    """784-900-625-400 sigmoid layers, then 10 logits (softmax in the loss)."""

    def __init__(self):
        super().__init__()
        sizes = [784, 900, 625, 400, 10]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = torch.sigmoid(layer(x))
        return self.layers[-1](x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per item (median)")
    ap.add_argument("--only", default=",".join(ITEMS), help="comma-separated items")
    ap.add_argument("--data", default="data/mnist", help="directory of the four MNIST .gz files")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    data = Path(args.data)
    x_train = torch.from_numpy(
        idx_file(data / "train-images-idx3-ubyte.gz", 16).reshape(-1, 784).astype(np.float32) / 255.0
    )
    y_train = torch.from_numpy(idx_file(data / "train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    x_test = torch.from_numpy(
        idx_file(data / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 784).astype(np.float32) / 255.0
    )
    batches = len(x_train) // BATCH

    def batch_indices():
        order = torch.randperm(len(x_train))
        return (order[b * BATCH:(b + 1) * BATCH] for b in range(batches))

    def classifier_epoch(model, opt, images):
        for i in batch_indices():
            opt.zero_grad(set_to_none=False)
            F.cross_entropy(model(images(i)), y_train[i]).backward()
            opt.step()

    def cnn_epoch(model, opt):
        classifier_epoch(model, opt, lambda i: x_train[i].view(-1, 1, 28, 28))

    # DAE layer 1: tied W (784 x 900), hidden and visible biases.
    bound = 4 * (6 / (784 + 900)) ** 0.5
    dae = [
        ((torch.rand(784, 900) * 2 - 1) * bound).requires_grad_(),
        torch.zeros(900, requires_grad=True),
        torch.zeros(784, requires_grad=True),
    ]
    dae_opt = torch.optim.SGD(dae, lr=0.1)

    def dae_epoch():
        w, b_hidden, b_visible = dae
        for i in batch_indices():
            x = x_train[i]
            noisy = x * torch.bernoulli(torch.full_like(x, 0.9))
            h = torch.sigmoid(noisy @ w + b_hidden)
            z = h @ w.t() + b_visible
            cost = F.binary_cross_entropy_with_logits(z, x, reduction="sum") / len(x)
            dae_opt.zero_grad(set_to_none=False)
            cost.backward()
            dae_opt.step()

    def inference(model):
        with torch.no_grad():
            for b in range(0, len(x_test), 1000):
                model(x_test[b:b + 1000].view(-1, 1, 28, 28)).argmax(1)

    results = {}
    for item in args.only.split(","):
        if item == "cnn-sgd":
            m = Cnn()
            o = torch.optim.SGD(m.parameters(), lr=0.05, weight_decay=1e-4)
            run = lambda: cnn_epoch(m, o)  # noqa: E731
        elif item == "cnn-rmsprop":
            m = Cnn()
            o = torch.optim.RMSprop(m.parameters(), lr=0.001, alpha=0.9, eps=1e-6, weight_decay=1e-4)
            run = lambda: cnn_epoch(m, o)  # noqa: E731
        elif item == "dae1":
            run = dae_epoch
        elif item == "mlp":
            m = Mlp()
            o = torch.optim.SGD(m.parameters(), lr=0.1)
            run = lambda: classifier_epoch(m, o, lambda i: x_train[i])  # noqa: E731
        elif item == "cnn-infer":
            m = Cnn().eval()
            run = lambda: inference(m)  # noqa: E731
        else:
            raise SystemExit(f"unknown item {item!r}; items: {', '.join(ITEMS)}")
        run()  # warm-up
        times = []
        for _ in range(args.epochs):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        results[item] = {"median_s": statistics.median(times), "runs_s": times}
        runs = " ".join(f"{t:.3f}" for t in times)
        print(f"{item:12s} {statistics.median(times):7.3f} s  ({args.threads} threads; runs {runs})", flush=True)
    if args.json:
        meta = {"torch": torch.__version__, "threads": args.threads, "batch": BATCH}
        Path(args.json).write_text(json.dumps({"meta": meta, "items": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
