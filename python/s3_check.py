"""Checks ferry's S3 endpoint with real S3 clients: boto3, the AWS CLI and s3fs.

    python s3_check.py ENDPOINT ACCESS_KEY SECRET_KEY STORE_DIR

STORE_DIR is the file:// store behind the endpoint's nodes (``ferry up``'s
DIR/store): objects are put there directly, as another tool would, and
objects written through the endpoint are looked for there. Exits non-zero
with the first failed check.
"""

import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time

import boto3
import botocore.config
import botocore.exceptions
import s3fs


def check(cond, what):
    if not cond:
        raise SystemExit(f"s3_check: FAILED: {what}")
    print(f"s3_check: ok: {what}", flush=True)


def wait_for(path, data, what, limit=120.0):
    t0 = time.monotonic()
    while True:
        try:
            with open(path, "rb") as f:
                if f.read() == data:
                    print(f"s3_check: ok: {what}", flush=True)
                    return
        except FileNotFoundError:
            pass
        if time.monotonic() - t0 > limit:
            raise SystemExit(f"s3_check: FAILED: {what} (not in the store after {limit:.0f} s)")
        time.sleep(0.2)


def main():
    endpoint, key, secret, store = sys.argv[1:5]
    rng = random.Random(7)
    cfg = botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
        region_name="us-east-1", config=cfg,
    )

    # Objects another tool put into the store.
    ds = os.path.join(store, "datasets", "s3check")
    os.makedirs(os.path.join(ds, "many"), exist_ok=True)
    os.makedirs(os.path.join(ds, "deep", "a", "b"), exist_ok=True)
    os.makedirs(os.path.join(ds, "empty"), exist_ok=True)
    big = rng.randbytes(9 * 1024 * 1024 + 17)
    with open(os.path.join(ds, "big.bin"), "wb") as f:
        f.write(big)
    many = {}
    for i in range(1100):
        name = f"many/f{i:05d}.txt"
        many[name] = f"object {i}\n".encode()
        with open(os.path.join(ds, name), "wb") as f:
            f.write(many[name])
    odd = "deep/a/b/odd name+plus%pct.txt"
    with open(os.path.join(ds, odd), "wb") as f:
        f.write(b"odd\n")

    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    check("datasets" in buckets, f"ListBuckets shows the mounts' top-level directories ({buckets})")

    # Whole and ranged GETs, byte-identical.
    got = s3.get_object(Bucket="datasets", Key="s3check/big.bin")["Body"].read()
    check(got == big, "GetObject of a 9 MiB object is byte-identical")
    for start, end in [(0, 0), (5, 4 * 1024 * 1024 + 3), (len(big) - 100, len(big) - 1), (4 << 20, 8 << 20)]:
        r = s3.get_object(Bucket="datasets", Key="s3check/big.bin", Range=f"bytes={start}-{end}")
        body = r["Body"].read()
        check(body == big[start:end + 1] and r["ContentRange"] == f"bytes {start}-{end}/{len(big)}",
              f"ranged GetObject bytes={start}-{end}")
    r = s3.get_object(Bucket="datasets", Key="s3check/big.bin", Range="bytes=-1000")
    check(r["Body"].read() == big[-1000:], "suffix range bytes=-1000")
    head = s3.head_object(Bucket="datasets", Key="s3check/big.bin")
    check(head["ContentLength"] == len(big), "HeadObject gives the size")
    try:
        s3.head_object(Bucket="datasets", Key="s3check/nope.bin")
        check(False, "HeadObject of a missing key fails")
    except botocore.exceptions.ClientError as e:
        check(e.response["Error"]["Code"] in ("404", "NoSuchKey"), "HeadObject of a missing key is a 404")
    try:
        s3.get_object(Bucket="datasets", Key="s3check/nope.bin")
        check(False, "GetObject of a missing key fails")
    except s3.exceptions.NoSuchKey:
        check(True, "GetObject of a missing key is NoSuchKey")

    # Listings: more than 1000 keys, pages, delimiters, odd names.
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="datasets", Prefix="s3check/many/", PaginationConfig={"PageSize": 300})
    keys = []
    npages = 0
    for p in pages:
        npages += 1
        keys += [o["Key"] for o in p.get("Contents", [])]
    check(keys == sorted(f"s3check/{k}" for k in many), f"ListObjectsV2 lists all 1100 keys in order over {npages} pages")
    keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="datasets", Prefix="s3check/") for o in p.get("Contents", [])]
    check(len(keys) == 1102 and keys == sorted(keys) and f"s3check/{odd}" in keys,
          f"a recursive listing of 1102 keys over default 1000-key pages, odd names intact ({len(keys)})")
    r = s3.list_objects_v2(Bucket="datasets", Prefix="s3check/", Delimiter="/")
    prefixes = [p["Prefix"] for p in r.get("CommonPrefixes", [])]
    objects = [o["Key"] for o in r.get("Contents", [])]
    check(prefixes == ["s3check/deep/", "s3check/empty/", "s3check/many/"] and objects == ["s3check/big.bin"],
          f"delimiter '/' gives folders and objects ({prefixes}, {objects})")
    r = s3.list_objects_v2(Bucket="datasets", Prefix="s3check/many/f001", Delimiter="/")
    check(len(r.get("Contents", [])) == 100, "a prefix within a directory's names")
    r = s3.list_objects(Bucket="datasets", Prefix="s3check/many/", MaxKeys=700)
    check(r["IsTruncated"] and len(r["Contents"]) == 700, "ListObjects (v1) pages too")

    # Writes: put, multipart of 100 MiB, copy, delete; each reaches the store.
    small = b"written through s3\n"
    s3.put_object(Bucket="datasets", Key="s3check/put/small.txt", Body=small)
    check(s3.get_object(Bucket="datasets", Key="s3check/put/small.txt")["Body"].read() == small, "PutObject reads back at once")
    wait_for(os.path.join(ds, "put", "small.txt"), small, "PutObject reaches the store")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "upload.bin")
        blob = rng.randbytes(100 * 1024 * 1024)
        with open(src, "wb") as f:
            f.write(blob)
        tc = boto3.s3.transfer.TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=16 << 20)
        s3.upload_file(src, "datasets", "s3check/put/multi.bin", Config=tc)
        # Most likely still in the node's journal now: its ETag must not
        # change when it reaches the store (a ranged download with If-Match
        # across that moment would fail).
        first_tag = s3.head_object(Bucket="datasets", Key="s3check/put/multi.bin")["ETag"]
        dst = os.path.join(tmp, "download.bin")
        s3.download_file("datasets", "s3check/put/multi.bin", dst, Config=tc)
        with open(dst, "rb") as f:
            check(hashlib.sha256(f.read()).digest() == hashlib.sha256(blob).digest(),
                  "a 100 MiB multipart upload downloads (ranged, in parallel) byte-identical")
        wait_for(os.path.join(ds, "put", "multi.bin"), blob, "the multipart upload reaches the store whole")
        later_tag = s3.head_object(Bucket="datasets", Key="s3check/put/multi.bin")["ETag"]
        check(later_tag == first_tag, f"the ETag stays when the bytes reach the store ({first_tag} -> {later_tag})")
        leftovers = [n for n in os.listdir(os.path.join(ds, "put")) if n not in ("small.txt", "multi.bin")]
        check(not leftovers, f"no staging objects left in the store ({leftovers})")
    s3.copy_object(Bucket="datasets", Key="s3check/put/copy.txt", CopySource={"Bucket": "datasets", "Key": "s3check/put/small.txt"})
    check(s3.get_object(Bucket="datasets", Key="s3check/put/copy.txt")["Body"].read() == small, "CopyObject")
    s3.delete_object(Bucket="datasets", Key="s3check/put/copy.txt")
    try:
        s3.head_object(Bucket="datasets", Key="s3check/put/copy.txt")
        check(False, "a deleted object is gone")
    except botocore.exceptions.ClientError:
        check(True, "DeleteObject")
    r = s3.delete_objects(Bucket="datasets", Delete={"Objects": [{"Key": "s3check/many/f00000.txt"}, {"Key": "s3check/many/f00001.txt"}]})
    check(len(r.get("Deleted", [])) == 2 and not r.get("Errors"), "DeleteObjects")

    # Refusals: a wrong secret, an unknown key, no signature, a traversal key.
    for who, (k, s) in {"a wrong secret": (key, secret + "x"), "an unknown key": ("nobody", secret)}.items():
        bad = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=k, aws_secret_access_key=s,
                           region_name="us-east-1", config=cfg)
        try:
            bad.get_object(Bucket="datasets", Key="s3check/big.bin")
            check(False, f"{who} is refused")
        except botocore.exceptions.ClientError as e:
            check(e.response["ResponseMetadata"]["HTTPStatusCode"] == 403, f"{who} is refused ({e.response['Error']['Code']})")
    anon = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        config=botocore.config.Config(signature_version=botocore.UNSIGNED, s3={"addressing_style": "path"}))
    try:
        anon.get_object(Bucket="datasets", Key="s3check/big.bin")
        check(False, "an unsigned request is refused")
    except botocore.exceptions.ClientError as e:
        check(e.response["ResponseMetadata"]["HTTPStatusCode"] == 403, "an unsigned request is refused")
    try:
        s3.put_object(Bucket="datasets", Key="s3check/../../escape.txt", Body=b"x")
        check(False, "a key with '..' is refused")
    except botocore.exceptions.ClientError as e:
        check(not os.path.exists(os.path.join(store, "..", "escape.txt")), f"a key with '..' is refused ({e.response['Error']['Code']})")

    # The AWS CLI.
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION="us-east-1")
    aws = [os.path.join(os.path.dirname(sys.executable), "aws"), "--endpoint-url", endpoint, "s3"]
    out = subprocess.run(aws + ["ls", "s3://datasets/s3check/"], env=env, capture_output=True, text=True, check=True).stdout
    check("PRE many/" in out and "big.bin" in out, "aws s3 ls")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(aws + ["sync", "--only-show-errors", "s3://datasets/s3check/deep/", tmp], env=env, check=True)
        with open(os.path.join(tmp, "a", "b", "odd name+plus%pct.txt"), "rb") as f:
            check(f.read() == b"odd\n", "aws s3 sync downloads a tree with odd names")
        up = os.path.join(tmp, "up")
        os.makedirs(up)
        for i in range(5):
            with open(os.path.join(up, f"u{i}.txt"), "wb") as f:
                f.write(f"up {i}\n".encode())
        subprocess.run(aws + ["sync", "--only-show-errors", up, "s3://datasets/s3check/synced/"], env=env, check=True)
        for i in range(5):
            wait_for(os.path.join(ds, "synced", f"u{i}.txt"), f"up {i}\n".encode(), f"aws s3 sync upload u{i}.txt reaches the store")
        subprocess.run(aws + ["cp", "--only-show-errors", "s3://datasets/s3check/big.bin", os.path.join(tmp, "big.bin")], env=env, check=True)
        with open(os.path.join(tmp, "big.bin"), "rb") as f:
            check(f.read() == big, "aws s3 cp downloads byte-identical")

    # s3fs (fsspec).
    fs = s3fs.S3FileSystem(key=key, secret=secret, client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
    check(fs.cat_file("datasets/s3check/big.bin", start=1000, end=2_000_000) == big[1000:2_000_000], "s3fs ranged cat_file")
    with fs.open("datasets/s3check/big.bin", "rb", block_size=1 << 20) as f:
        f.seek(3_000_000)
        check(f.read(500_000) == big[3_000_000:3_500_000], "s3fs seek and read")
    names = fs.ls("datasets/s3check/deep/a/b")
    check(names == ["datasets/s3check/deep/a/b/odd name+plus%pct.txt"], f"s3fs ls ({names})")
    print("s3_check: all checks passed")


if __name__ == "__main__":
    main()
