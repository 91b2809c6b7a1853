"""Tell a ferry mount the order a training job will read its samples in.

A job that knows its sampler's order (a seeded shuffle, an index list) can
announce it; the mount then fetches exactly the files, or byte ranges of
record files, that come next, ahead of the DataLoader's workers. Without an
announcement the mount still prefetches, by prediction.

    from torch.utils.data import DataLoader, RandomSampler
    from ferry import AnnouncingSampler

    sampler = AnnouncingSampler(RandomSampler(ds), "/mnt/ferry", lambda i: ds.files[i])
    loader = DataLoader(ds, sampler=sampler, batch_size=32, num_workers=8)

Each epoch, the sampler's order is written to the mount's `.ferry-announce`
file before the first index is handed out. The mount passes the order on
to the cache nodes holding its pages, which then evict by it: with a cache
smaller than the dataset, an epoch finds cached every page the cache can
hold, where least-recently-used eviction keeps almost none. An order belongs to the process
that announced it and the processes it starts (its DataLoader workers):
the ranks of a data-parallel job on one host, each wrapping its own
DistributedSampler, each get their own order, and neither replaces the
other's. Readers outside every announcing process follow the latest order. `path_of(index)` gives a path
(absolute under the mount, or relative to its root); for samples inside
large record files, a tuple `(path, offset, length)`; for samples made of
several files (a clip of video frames, one step of several sensors), a list
of those, in the order they are read.

`stats(mount)` returns the mount's prefetch counters (precision, coverage,
hit ratio, ...). Only `DistributedAnnouncingSampler` needs PyTorch (imported
when it is used).
"""

import json
import os

ANNOUNCE_FILE = ".ferry-announce"
STATS_FILE = ".ferry-stats"

__all__ = ["announce", "stats", "AnnouncingSampler", "DistributedAnnouncingSampler"]


def _relative(mount, path):
    path = os.fspath(path)
    if os.path.isabs(path):
        rel = os.path.relpath(path, mount)
        if rel.startswith(".."):
            raise ValueError(f"{path} is not under the mount {mount}")
        path = rel
    if "\n" in path:
        raise ValueError(f"{path!r}: a path with a newline cannot be announced")
    return "/" + path.lstrip("/")


def _lines(mount, entry):
    if isinstance(entry, list):
        for e in entry:
            yield from _lines(mount, e)
    elif isinstance(entry, tuple):
        path, offset, length = entry
        yield f"{_relative(mount, path)} {int(offset)} {int(length)}"
    else:
        yield _relative(mount, entry)


def announce(mount, entries):
    """Announces `entries` (paths, (path, offset, length) tuples, or lists of
    those for samples of several files) as the order this process and its
    children (DataLoader workers) will read `mount` in next. Returns how many files or ranges were announced. A path
    that does not exist raises OSError and changes nothing.
    """
    lines = [line for e in entries for line in _lines(mount, e)]
    with open(os.path.join(mount, ANNOUNCE_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return len(lines)


def stats(mount):
    """The mount's prefetch counters as a dict."""
    with open(os.path.join(mount, STATS_FILE), encoding="utf-8") as f:
        return json.load(f)


class AnnouncingSampler:
    """Wraps a sampler (anything iterable over indices): each epoch's order
    is announced to the mount, then handed out unchanged."""

    def __init__(self, sampler, mount, path_of):
        self.sampler = sampler
        self.mount = mount
        self.path_of = path_of

    def __iter__(self):
        order = list(iter(self.sampler))
        announce(self.mount, (self.path_of(i) for i in order))
        return iter(order)

    def __len__(self):
        return len(self.sampler)

    def set_epoch(self, epoch):
        """Passed on to samplers that have it (DistributedSampler)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


def DistributedAnnouncingSampler(dataset, mount, path_of, **kwargs):  # noqa: N802 - a class to its users
    """A `torch.utils.data.DistributedSampler` over `dataset` (`kwargs` are
    its own: num_replicas, rank, shuffle, seed, drop_last) whose rank's
    order is announced to `mount` each epoch. Call `set_epoch` as with the
    plain sampler. Each rank is its own process, so ranks never replace
    each other's orders."""
    from torch.utils.data import DistributedSampler

    return AnnouncingSampler(DistributedSampler(dataset, **kwargs), mount, path_of)
