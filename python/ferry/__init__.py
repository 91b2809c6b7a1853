"""ferry from Python: read a ferry namespace with fsspec, announce read orders.

- :class:`FerryFileSystem`: the fsspec filesystem for ``ferry://`` URLs,
  over a ferry mount or the S3 endpoint (imported on first use: the
  samplers need nothing but the standard library).
- :class:`AnnouncingSampler`, :func:`DistributedAnnouncingSampler`,
  :func:`announce`: tell a mount the order a training job reads in.
- :func:`stats`: the mount's prefetch counters.
"""

from .prefetch import AnnouncingSampler, DistributedAnnouncingSampler, announce, stats

__all__ = ["FerryFileSystem", "AnnouncingSampler", "DistributedAnnouncingSampler", "announce", "stats"]
__version__ = "0.1.0"


def __getattr__(name):
    if name == "FerryFileSystem":
        from .fs import FerryFileSystem

        return FerryFileSystem
    raise AttributeError(f"module 'ferry' has no attribute {name!r}")
