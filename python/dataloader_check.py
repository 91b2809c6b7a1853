"""Reads a dataset through a ferry mount with a real PyTorch DataLoader.

    python3 python/dataloader_check.py MOUNT DIR [--epochs N] [--workers N]
        [--batch N] [--no-announce]

Every file under MOUNT/DIR is one sample. The DataLoader shuffles them with
a seeded RandomSampler wrapped in ferry_prefetch.AnnouncingSampler (unless
--no-announce), reads them in worker processes and hands back, per sample,
its path (relative to DIR), length and SHA-256. Prints one JSON object:
{"epochs": [[[path, length, sha256], ...], ...], "seconds": [...],
"stats": the mount's prefetch counters after the run}. The caller compares
the hashes with the source files.

Needs PyTorch (`pip install torch`); ferry itself does not.
"""

import argparse
import hashlib
import json
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferry_prefetch import AnnouncingSampler, stats  # noqa: E402


class Files(Dataset):
    """One sample per file: the file's bytes, reduced to length and hash."""

    def __init__(self, root, names):
        self.root = root
        self.names = names

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        with open(os.path.join(self.root, self.names[i]), "rb") as f:
            data = f.read()
        return self.names[i], len(data), hashlib.sha256(data).hexdigest()


def keep_list(batch):
    return batch


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mount")
    p.add_argument("dir")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--no-announce", action="store_true")
    a = p.parse_args()

    root = os.path.join(a.mount, a.dir)
    names = sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
    )
    if not names:
        sys.exit(f"no files under {root}")
    ds = Files(root, names)
    generator = torch.Generator()
    generator.manual_seed(7)
    sampler = RandomSampler(ds, generator=generator)
    if not a.no_announce:
        sampler = AnnouncingSampler(sampler, a.mount, lambda i: os.path.join(a.dir, names[i]))
    loader = DataLoader(
        ds, sampler=sampler, batch_size=a.batch, num_workers=a.workers, collate_fn=keep_list
    )
    epochs, seconds = [], []
    for _ in range(a.epochs):
        t0 = time.monotonic()
        epochs.append([list(s) for batch in loader for s in batch])
        seconds.append(time.monotonic() - t0)
    print(json.dumps({"epochs": epochs, "seconds": seconds, "stats": stats(a.mount)}))


if __name__ == "__main__":
    main()
