"""Checks the installed ferry package: fsspec over a ferry mount and over
the S3 endpoint, byte-identical to the store.

    python package_check.py MOUNT ENDPOINT ACCESS_KEY SECRET_KEY STORE_DIR

Run it with the interpreter of a venv the package was pip-installed into,
from outside the source tree. Exits non-zero with the first failed check.
"""

import os
import sys

import fsspec

import ferry


def check(cond, what):
    if not cond:
        raise SystemExit(f"package_check: FAILED: {what}")
    print(f"package_check: ok: {what}", flush=True)


def main():
    mount, endpoint, key, secret, store = sys.argv[1:6]
    check("site-packages" in ferry.__file__, f"ferry is imported from the installed package ({ferry.__file__})")
    os.makedirs(os.path.join(store, "datasets", "pkg", "sub"), exist_ok=True)
    blob = os.urandom(3 * 1024 * 1024 + 5)
    with open(os.path.join(store, "datasets", "pkg", "blob.bin"), "wb") as f:
        f.write(blob)
    with open(os.path.join(store, "datasets", "pkg", "sub", "a.txt"), "wb") as f:
        f.write(b"a\n")
    check(fsspec.get_filesystem_class("ferry") is ferry.FerryFileSystem, "fsspec finds the ferry:// protocol (entry point)")

    with fsspec.open("ferry://datasets/pkg/blob.bin", "rb", mount=mount) as f:
        check(f.read() == blob, "fsspec.open of ferry:// through the mount is byte-identical")
    fs = fsspec.filesystem("ferry", mount=mount)
    check(sorted(fs.ls("datasets/pkg", detail=False)) == ["datasets/pkg/blob.bin", "datasets/pkg/sub"],
          f"ls through the mount ({fs.ls('datasets/pkg', detail=False)})")
    check(fs.cat_file("ferry://datasets/pkg/blob.bin", start=100, end=200_000) == blob[100:200_000], "ranged cat through the mount")

    s3 = fsspec.filesystem("ferry", endpoint_url=endpoint, key=key, secret=secret)
    check(s3.cat_file("datasets/pkg/blob.bin") == blob, "cat over the S3 endpoint is byte-identical")
    check(s3.cat_file("ferry://datasets/pkg/blob.bin", start=1_000_000, end=2_500_000) == blob[1_000_000:2_500_000],
          "ranged cat over the S3 endpoint")
    check(s3.info("datasets/pkg/blob.bin")["size"] == len(blob), "info over the S3 endpoint")
    check(sorted(s3.ls("datasets/pkg", detail=False)) == ["datasets/pkg/blob.bin", "datasets/pkg/sub"],
          f"ls over the S3 endpoint ({s3.ls('datasets/pkg', detail=False)})")
    try:
        fsspec.filesystem("ferry")
        check(False, "a filesystem without mount or endpoint is refused")
    except ValueError:
        check(True, "a filesystem without mount or endpoint is refused with a clear error")
    print("package_check: all checks passed")


if __name__ == "__main__":
    main()
