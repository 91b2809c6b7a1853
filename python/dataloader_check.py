"""Reads a dataset through a ferry mount with a real PyTorch DataLoader.

    python3 python/dataloader_check.py MOUNT DIR [--epochs N] [--workers N]
        [--batch N] [--no-announce] [--rank R --world N [--barrier DIR]]

Every file under MOUNT/DIR is one sample. The DataLoader shuffles them with
a seeded RandomSampler (or, with --world, the DistributedSampler of rank R
of N, as each process of a data-parallel job has) wrapped in
ferry.AnnouncingSampler (ferry.DistributedAnnouncingSampler with --world) (unless --no-announce), reads them in
worker processes and hands back, per sample, its path (relative to DIR),
length and SHA-256. With --barrier, the ranks start each epoch together
(each marks DIR and waits for the others' marks). Prints one JSON object: {"epochs": [[[path, length,
sha256], ...], ...], "seconds": [...], "pid": this process, "stats": the
mount's prefetch counters after the run}. The caller compares the hashes
with the source files.

Needs PyTorch (`pip install torch`); ferry itself does not.
"""

import argparse
import hashlib
import json
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ferry import AnnouncingSampler, DistributedAnnouncingSampler, stats  # noqa: E402


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


def meet(barrier, epoch, rank, world):
    """Waits until every rank has reached `epoch` (marks in `barrier`)."""
    open(os.path.join(barrier, f"{epoch}-{rank}"), "w").close()
    deadline = time.monotonic() + 120
    while sum(os.path.exists(os.path.join(barrier, f"{epoch}-{r}")) for r in range(world)) < world:
        if time.monotonic() > deadline:
            sys.exit(f"rank {rank}: the other ranks did not reach epoch {epoch}")
        time.sleep(0.01)


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
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--world", type=int, default=0, help="ranks of a data-parallel job (0: one process)")
    p.add_argument("--barrier", help="a directory the ranks meet in before each epoch")
    a = p.parse_args()

    root = os.path.join(a.mount, a.dir)
    names = sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
    )
    if not names:
        sys.exit(f"no files under {root}")
    ds = Files(root, names)
    path_of = lambda i: os.path.join(a.dir, names[i])  # noqa: E731
    if a.world:
        # No process group is needed to ask for one rank's share.
        dist = dict(num_replicas=a.world, rank=a.rank, shuffle=True, seed=7)
        if a.no_announce:
            sampler = DistributedSampler(ds, **dist)
        else:
            sampler = DistributedAnnouncingSampler(ds, a.mount, path_of, **dist)
    else:
        generator = torch.Generator()
        generator.manual_seed(7)
        sampler = RandomSampler(ds, generator=generator)
        if not a.no_announce:
            sampler = AnnouncingSampler(sampler, a.mount, path_of)
    loader = DataLoader(
        ds, sampler=sampler, batch_size=a.batch, num_workers=a.workers, collate_fn=keep_list
    )
    epochs, seconds = [], []
    for epoch in range(a.epochs):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if a.barrier:
            meet(a.barrier, epoch, a.rank, a.world)
        t0 = time.monotonic()
        epochs.append([list(s) for batch in loader for s in batch])
        seconds.append(time.monotonic() - t0)
    print(json.dumps({"epochs": epochs, "seconds": seconds, "pid": os.getpid(), "stats": stats(a.mount)}))


if __name__ == "__main__":
    main()
