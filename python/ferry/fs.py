"""The fsspec filesystem for ``ferry://`` URLs.

``ferry://datasets/train/x`` names the namespace path ``/datasets/train/x``.
Its bytes come either through a ferry FUSE mount on this host (``mount``)
or through ferry's S3 endpoint (``endpoint_url``; needs ``s3fs``), whose
buckets are the namespace's top-level directories.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem


class FerryFileSystem(DirFileSystem):
    """A ferry namespace as an fsspec filesystem.

    Parameters
    ----------
    mount:
        Where a ferry mount is (``ferry mount`` or ``ferry up``'s DIR/mnt);
        default ``$FERRY_MOUNT``.
    endpoint_url:
        The S3 endpoint (``ferry s3``), used when no mount is given; default
        ``$FERRY_S3_ENDPOINT``.
    key, secret:
        The endpoint's access key and secret; default ``$AWS_ACCESS_KEY_ID``
        and ``$AWS_SECRET_ACCESS_KEY``.
    """

    protocol = "ferry"

    def __init__(
        self,
        mount: Optional[str] = None,
        endpoint_url: Optional[str] = None,
        key: Optional[str] = None,
        secret: Optional[str] = None,
        **storage_options: Any,
    ) -> None:
        mount = mount or os.environ.get("FERRY_MOUNT")
        endpoint_url = endpoint_url or os.environ.get("FERRY_S3_ENDPOINT")
        if mount:
            if not os.path.isdir(mount):
                raise FileNotFoundError(f"ferry mount {mount!r} is not a directory")
            fs: Any = LocalFileSystem()
            root = os.path.abspath(mount)
        elif endpoint_url:
            try:
                import s3fs
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError("the S3 endpoint backend needs s3fs: pip install 'ferry[s3]'") from e
            fs = s3fs.S3FileSystem(
                key=key or os.environ.get("AWS_ACCESS_KEY_ID"),
                secret=secret or os.environ.get("AWS_SECRET_ACCESS_KEY"),
                client_kwargs={"endpoint_url": endpoint_url, "region_name": "us-east-1"},
                config_kwargs={"s3": {"addressing_style": "path"}},
            )
            root = "/"  # the bucket level: the S3 filesystem strips it to ""
        else:
            raise ValueError("FerryFileSystem needs mount= or endpoint_url= (or $FERRY_MOUNT / $FERRY_S3_ENDPOINT)")
        super().__init__(path=root, fs=fs, **storage_options)
        self.mount = mount
        self.endpoint_url = None if mount else endpoint_url

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, (list, tuple)):
            return type(path)(cls._strip_protocol(p) for p in path)
        path = os.fspath(path)
        if path.startswith("ferry://"):
            path = path[len("ferry://"):]
        return path.lstrip("/")

    def _join(self, path):
        if isinstance(path, str):
            path = self._strip_protocol(path)
        elif isinstance(path, (list, tuple)):
            path = type(path)(self._strip_protocol(p) for p in path)
        return super()._join(path)
