"""ferry from Python: read a ferry namespace with fsspec, announce read orders.

- :class:`FerryFileSystem`: the fsspec filesystem for ``ferry://`` URLs,
  over a ferry mount or the S3 endpoint.
- :class:`AnnouncingSampler`, :class:`DistributedAnnouncingSampler`,
  :func:`announce`: tell a mount the order a training job reads in.
- :func:`stats`: the mount's prefetch counters.
"""

from .fs import FerryFileSystem
from .prefetch import AnnouncingSampler, DistributedAnnouncingSampler, announce, stats

__all__ = ["FerryFileSystem", "AnnouncingSampler", "DistributedAnnouncingSampler", "announce", "stats"]
__version__ = "0.1.0"
