//! The S3-compatible endpoint (`ferry s3`): the namespace over the S3 API,
//! through the cache, for pods without FUSE and for S3 tools (the AWS CLI,
//! boto3, s3fs, PyArrow).
//!
//! The HTTP side, request parsing and SigV4 are `s3s`; this module maps
//! operations onto a [`Cluster`] client. Buckets are the namespace's
//! top-level directories (its mounts: `s3://datasets/train/x` is
//! `/datasets/train/x`). Each access key stands for a ferry identity: its
//! requests reach the nodes with that identity's certificate, so the
//! nodes' access rules apply to it as to any client. Objects written here
//! (PutObject, multipart uploads, CopyObject) are staged in a local
//! directory until the whole body is in, then written through the path's
//! owner, where they are acknowledged once durable in the write-back
//! journal.

mod list;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{SinkExt, StreamExt, TryStreamExt};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use tokio::io::AsyncWriteExt;

use ferry_protocol::client::Cluster;
use ferry_protocol::codec::{EntryKind, ObjectInfo};
use ferry_protocol::error::{ErrorCode, ProtocolError};
use ferry_protocol::ids::NsPath;

/// One access key and the cluster client that acts for it.
#[derive(Debug)]
pub struct S3Key {
    /// The access key id clients sign with.
    pub access_key: String,
    /// Its secret.
    pub secret_key: String,
    /// A client presenting the ferry identity this key stands for.
    pub cluster: Cluster,
}

/// The S3 operations over the namespace.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    clusters: HashMap<String, Cluster>,
    staging: PathBuf,
}

impl Gateway {
    /// A gateway answering requests signed with `keys`, staging uploads
    /// in `staging` (created if missing).
    pub fn new(keys: &[S3Key], staging: &Path) -> std::io::Result<(Gateway, s3s::auth::SimpleAuth)> {
        std::fs::create_dir_all(staging.join(MULTIPART))?;
        let mut auth = s3s::auth::SimpleAuth::new();
        let mut clusters = HashMap::new();
        for k in keys {
            auth.register(k.access_key.clone(), k.secret_key.clone().into());
            clusters.insert(k.access_key.clone(), k.cluster.clone());
        }
        Ok((Gateway { inner: Arc::new(Inner { clusters, staging: staging.to_path_buf() }) }, auth))
    }

    /// The client acting for the request's access key.
    fn cluster<T>(&self, req: &S3Request<T>) -> S3Result<&Cluster> {
        let key = req.credentials.as_ref().map(|c| c.access_key.as_str());
        key.and_then(|k| self.inner.clusters.get(k))
            .ok_or_else(|| s3_error!(AccessDenied, "a request signed with a configured access key is required"))
    }

    fn staged(&self) -> PathBuf {
        self.inner.staging.join(format!("put-{}", unique()))
    }

    fn upload_dir(&self, upload_id: &str) -> S3Result<PathBuf> {
        if upload_id.is_empty() || upload_id.len() > 64 || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(s3_error!(NoSuchUpload, "no upload {upload_id:?}"));
        }
        let dir = self.inner.staging.join(MULTIPART).join(upload_id);
        if !dir.is_dir() {
            return Err(s3_error!(NoSuchUpload, "no upload {upload_id:?} (completed, aborted or never started)"));
        }
        Ok(dir)
    }
}

/// Where multipart uploads in progress keep their parts.
const MULTIPART: &str = "multipart";
/// Pages of an object read ahead of the HTTP response.
const BODY_BUFFER: usize = 8;

/// Serves `gateway` over HTTP on `listener` until `shutdown` completes;
/// `/healthz` and `/readyz` answer `ok` (so those two cannot be bucket
/// names here).
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    auth: s3s::auth::SimpleAuth,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = s3s::service::S3ServiceBuilder::new(gateway);
    builder.set_auth(auth);
    let service = axum::error_handling::HandleError::new(builder.build(), |e: s3s::HttpError| async move {
        tracing::warn!(error = ?e, "S3 request failed below the S3 layer");
        http::StatusCode::INTERNAL_SERVER_ERROR
    });
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(|| async { "ok\n" }))
        .fallback_service(service);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// A name no other upload in this process or another uses.
fn unique() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The namespace path of `key` in `bucket`.
fn ns_path(bucket: &str, key: &str) -> S3Result<String> {
    let p = format!("/{bucket}/{key}");
    if p.len() > 4096 {
        return Err(s3_error!(KeyTooLongError));
    }
    NsPath::parse(&p).map(|p| p.to_string()).map_err(|e| s3_error!(InvalidArgument, "key {key:?}: {e}"))
}

/// The S3 error for a ferry error on `path`.
fn s3_err(e: ProtocolError, path: &str) -> S3Error {
    let (code, msg) = match &e {
        ProtocolError::Remote { code, message } => (
            match code {
                ErrorCode::NotFound => S3ErrorCode::NoSuchKey,
                ErrorCode::Unauthorized => S3ErrorCode::AccessDenied,
                ErrorCode::InvalidInput | ErrorCode::Exists | ErrorCode::NotEmpty => S3ErrorCode::InvalidRequest,
                ErrorCode::TooLarge => S3ErrorCode::EntityTooLarge,
                ErrorCode::Unsupported => S3ErrorCode::NotImplemented,
                ErrorCode::Unavailable => S3ErrorCode::ServiceUnavailable,
                _ => S3ErrorCode::InternalError,
            },
            message.clone(),
        ),
        ProtocolError::Connection { .. } => (S3ErrorCode::ServiceUnavailable, e.to_string()),
        _ => (S3ErrorCode::InternalError, e.to_string()),
    };
    if matches!(code, S3ErrorCode::InternalError | S3ErrorCode::ServiceUnavailable) {
        tracing::warn!(path, error = %e, "S3 request failed");
    }
    S3Error::with_message(code, format!("{path}: {msg}"))
}

fn io_err(e: std::io::Error) -> S3Error {
    tracing::warn!(error = %e, "S3 staging failed");
    S3Error::with_message(S3ErrorCode::InternalError, format!("staging: {e}"))
}

fn is_not_found(e: &ProtocolError) -> bool {
    matches!(e, ProtocolError::Remote { code: ErrorCode::NotFound, .. })
}

/// The stat of the object at `path`: a directory is no object.
async fn object(cluster: &Cluster, path: &str) -> S3Result<ObjectInfo> {
    match cluster.stat(path).await {
        Ok(info) if info.kind == EntryKind::File => Ok(info),
        Ok(_) => Err(s3_error!(NoSuchKey, "{path} is a directory")),
        Err(e) => Err(s3_err(e, path)),
    }
}

/// The object's ETag: the store's version tag, unquoted; for bytes written
/// through a node, the tag they had while pending, before and after they
/// reach the store (the store's new tag names the same bytes, and a client
/// downloading in ranges with If-Match must not see the tag change under it).
fn etag(info: &ObjectInfo) -> ETag {
    let tag = if info.origin.is_empty() { &info.etag } else { &info.origin };
    let tag = tag.trim_start_matches("W/").trim_matches('"');
    if tag.is_empty() {
        ETag::Strong(format!("{:x}-{:x}", info.size, info.mtime_ms))
    } else {
        ETag::Strong(tag.to_string())
    }
}

fn written_etag(etag: &str) -> ETag {
    ETag::Strong(etag.trim_start_matches("W/").trim_matches('"').to_string())
}

fn timestamp(mtime_ms: i64) -> Timestamp {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(mtime_ms).unwrap_or(0));
    Timestamp::from(t)
}

fn size(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Whether `cond` (If-Match / If-None-Match) names `tag`.
fn matches(cond: &ETagCondition, tag: &ETag) -> bool {
    cond.is_any() || cond.as_etag().is_some_and(|c| c.value() == tag.value())
}

fn check_conditions(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    tag: &ETag,
) -> S3Result<()> {
    if let Some(c) = if_match {
        if !matches(c, tag) {
            return Err(s3_error!(PreconditionFailed, "the object's ETag is {:?}", tag.value()));
        }
    }
    if let Some(c) = if_none_match {
        if matches(c, tag) {
            return Err(s3_error!(NotModified));
        }
    }
    Ok(())
}

/// Writes `body` to a new file at `to`; its length and BLAKE3 hash.
async fn stage(body: Option<StreamingBlob>, to: &Path, expected: Option<i64>) -> S3Result<(u64, String)> {
    let mut file = tokio::fs::File::create(to).await.map_err(io_err)?;
    let mut hasher = blake3::Hasher::new();
    let mut len = 0u64;
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| s3_error!(IncompleteBody, "reading the request body: {e}"))?;
            hasher.update(&chunk);
            len += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io_err)?;
        }
    }
    file.flush().await.map_err(io_err)?;
    if let Some(n) = expected {
        if u64::try_from(n).ok() != Some(len) {
            return Err(s3_error!(IncompleteBody, "got {len} bytes of a {n}-byte body"));
        }
    }
    Ok((len, hasher.finalize().to_hex()[..32].to_string()))
}

/// Removes a staged file when dropped, unless the node took it over.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes the staged file `local` as `path`: acknowledged once the
/// path's owner has it durable.
async fn put_staged(cluster: &Cluster, path: &str, local: &Path) -> S3Result<ferry_protocol::client::Written> {
    cluster.put_file(path, local).await.map_err(|e| s3_err(e, path))
}

/// A multipart upload's target, kept beside its parts.
const TARGET: &str = "target";

fn part_file(dir: &Path, number: i32) -> S3Result<PathBuf> {
    if !(1..=10_000).contains(&number) {
        return Err(s3_error!(InvalidArgument, "part number {number} is not within 1..=10000"));
    }
    Ok(dir.join(format!("part-{number:05}")))
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let cluster = self.cluster(&req)?;
        let entries = cluster.list("/").await.map_err(|e| s3_err(e, "/"))?;
        let buckets = entries
            .into_iter()
            .filter(|e| e.info.kind == EntryKind::Dir && s3s::path::check_bucket_name(&e.name))
            .map(|e| Bucket {
                name: Some(e.name),
                creation_date: Some(timestamp(e.info.mtime_ms)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), ..Default::default() }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let cluster = self.cluster(&req)?;
        let path = ns_path(&req.input.bucket, "")?;
        match cluster.stat(&path).await {
            Ok(info) if info.kind == EntryKind::Dir => Ok(S3Response::new(HeadBucketOutput::default())),
            Ok(_) => Err(s3_error!(NoSuchBucket)),
            Err(e) if is_not_found(&e) => Err(s3_error!(NoSuchBucket)),
            Err(e) => Err(s3_err(e, &path)),
        }
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.head_bucket(req.map_input(|i| HeadBucketInput { bucket: i.bucket, ..Default::default() })).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        Err(s3_error!(
            NotImplemented,
            "buckets are the node's mounts ([[mounts]] in cloud.toml); {:?} cannot be created here",
            req.input.bucket
        ))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let cluster = self.cluster(&req)?;
        let input = &req.input;
        let path = ns_path(&input.bucket, &input.key)?;
        let info = object(cluster, &path).await?;
        let tag = etag(&info);
        check_conditions(input.if_match.as_ref(), input.if_none_match.as_ref(), &tag)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(size(info.size)),
            e_tag: Some(tag),
            last_modified: Some(timestamp(info.mtime_ms)),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let cluster = self.cluster(&req)?.clone();
        let input = req.input;
        let path = ns_path(&input.bucket, &input.key)?;
        let info = object(&cluster, &path).await?;
        let tag = etag(&info);
        check_conditions(input.if_match.as_ref(), input.if_none_match.as_ref(), &tag)?;
        let (range, content_range) = match &input.range {
            None => (0..info.size, None),
            Some(r) => {
                let range = r.check(info.size)?;
                let shown = format!("bytes {}-{}/{}", range.start, range.end.saturating_sub(1), info.size);
                (range, Some(shown))
            }
        };
        let len = range.end - range.start;
        // The body: pages read ahead by a task, in order, into a bounded
        // channel; a failure mid-way ends the body with the error, so the
        // client sees a broken transfer, never short data as whole.
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(BODY_BUFFER);
        let stat = info.clone();
        tokio::spawn(async move {
            let sent = async {
                let pieces = cluster.pieces(&path, &stat, range.start, range.end).await?;
                let mut pieces = std::pin::pin!(pieces);
                while let Some(chunks) = pieces.try_next().await? {
                    for c in chunks {
                        if tx.send(Ok(c)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                Ok::<(), ProtocolError>(())
            };
            if let Err(e) = sent.await {
                tracing::warn!(path = %path, error = %e, "S3 GetObject failed mid-body");
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
            }
        });
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(rx)),
            content_length: Some(size(len)),
            content_range,
            e_tag: Some(tag),
            last_modified: Some(timestamp(info.mtime_ms)),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let cluster = self.cluster(&req)?;
        let input = req.input;
        list::objects_v2(cluster, input).await.map(S3Response::new)
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let cluster = self.cluster(&req)?;
        let input = req.input;
        let v2 = ListObjectsV2Input {
            bucket: input.bucket,
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            max_keys: input.max_keys,
            prefix: input.prefix,
            start_after: input.marker.clone(),
            ..Default::default()
        };
        let out = list::objects_v2(cluster, v2).await?;
        // Version 1 has no continuation token: the next marker is the last key returned.
        let next_marker = out.is_truncated.unwrap_or(false).then(|| out.next_continuation_token.clone()).flatten();
        Ok(S3Response::new(ListObjectsOutput {
            contents: out.contents,
            common_prefixes: out.common_prefixes,
            delimiter: out.delimiter,
            encoding_type: out.encoding_type,
            name: out.name,
            prefix: out.prefix,
            max_keys: out.max_keys,
            is_truncated: out.is_truncated,
            marker: input.marker,
            next_marker,
            ..Default::default()
        }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let cluster = self.cluster(&req)?;
        let input = req.input;
        let path = ns_path(&input.bucket, &input.key)?;
        if input.key.ends_with('/') {
            // A folder marker: a directory in the namespace.
            let len = body_len(input.body).await?;
            if len > 0 {
                return Err(s3_error!(InvalidArgument, "a key ending in '/' names a folder and takes no data"));
            }
            cluster
                .mkdir(&path)
                .await
                .or_else(|e| if is_exists(&e) { Ok(()) } else { Err(e) })
                .map_err(|e| s3_err(e, &path))?;
            return Ok(S3Response::new(PutObjectOutput {
                e_tag: Some(ETag::Strong(String::new())),
                ..Default::default()
            }));
        }
        let staged = Staged(self.staged());
        let (len, _) = stage(input.body, &staged.0, input.content_length).await?;
        let written = put_staged(cluster, &path, &staged.0).await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(written_etag(&written.etag)),
            size: Some(size(len)),
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let cluster = self.cluster(&req)?;
        let path = ns_path(&req.input.bucket, &req.input.key)?;
        delete(cluster, &path, req.input.key.ends_with('/')).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let cluster = self.cluster(&req)?;
        let input = req.input;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in input.delete.objects {
            let done = match ns_path(&input.bucket, &o.key) {
                Ok(path) => delete(cluster, &path, o.key.ends_with('/')).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(()) if !quiet => deleted.push(DeletedObject { key: Some(o.key), ..Default::default() }),
                Ok(()) => {}
                Err(e) => errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(o.key),
                    message: e.message().map(str::to_string),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), errors: Some(errors), ..Default::default() }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let cluster = self.cluster(&req)?;
        let input = req.input;
        let (src_bucket, src_key) = match &input.copy_source {
            CopySource::Bucket { bucket, key, .. } => (bucket.to_string(), key.to_string()),
            _ => return Err(s3_error!(NotImplemented, "copy sources other than BUCKET/KEY")),
        };
        let from = ns_path(&src_bucket, &src_key)?;
        let to = ns_path(&input.bucket, &input.key)?;
        let info = object(cluster, &from).await?;
        let tag = etag(&info);
        check_conditions(input.copy_source_if_match.as_ref(), input.copy_source_if_none_match.as_ref(), &tag)
            .map_err(|e| if e.code() == &S3ErrorCode::NotModified { s3_error!(PreconditionFailed) } else { e })?;
        let staged = Staged(self.staged());
        let mut file = tokio::fs::File::create(&staged.0).await.map_err(io_err)?;
        cluster.read_to(&from, 0, None, &mut file).await.map_err(|e| s3_err(e, &from))?;
        file.sync_data().await.map_err(io_err)?;
        drop(file);
        let written = put_staged(cluster, &to, &staged.0).await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(written_etag(&written.etag)),
                last_modified: Some(Timestamp::from(SystemTime::now())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let cluster = self.cluster(&req)?;
        let input = req.input;
        let path = ns_path(&input.bucket, &input.key)?;
        // Refused now rather than after every part: a path this identity may not write.
        if let Err(e) = cluster.stat(&path).await {
            if !is_not_found(&e) {
                return Err(s3_err(e, &path));
            }
        }
        let id = unique();
        let dir = self.inner.staging.join(MULTIPART).join(&id);
        tokio::fs::create_dir(&dir).await.map_err(io_err)?;
        tokio::fs::write(dir.join(TARGET), &path).await.map_err(io_err)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.cluster(&req)?;
        let input = req.input;
        let dir = self.upload_dir(&input.upload_id)?;
        let part = part_file(&dir, input.part_number)?;
        // Written beside, then renamed: a part sent twice replaces the first whole.
        let tmp = Staged(dir.join(format!("{}.{}", part.display(), unique())));
        let (_, hash) = stage(input.body, &tmp.0, input.content_length).await?;
        tokio::fs::rename(&tmp.0, &part).await.map_err(io_err)?;
        tokio::fs::write(part.with_extension("etag"), &hash).await.map_err(io_err)?;
        Ok(S3Response::new(UploadPartOutput { e_tag: Some(ETag::Strong(hash)), ..Default::default() }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let cluster = self.cluster(&req)?;
        let input = req.input;
        let dir = self.upload_dir(&input.upload_id)?;
        let path = tokio::fs::read_to_string(dir.join(TARGET)).await.map_err(io_err)?;
        if path != ns_path(&input.bucket, &input.key)? {
            return Err(s3_error!(NoSuchUpload, "upload {} is for {path}", input.upload_id));
        }
        let parts = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        if parts.is_empty() {
            return Err(s3_error!(InvalidRequest, "a multipart upload needs at least one part"));
        }
        let whole = Staged(self.staged());
        let mut out = tokio::fs::File::create(&whole.0).await.map_err(io_err)?;
        let mut last = 0;
        for p in &parts {
            let n = p.part_number.ok_or_else(|| s3_error!(InvalidPart, "a part without its number"))?;
            if n <= last {
                return Err(s3_error!(InvalidPartOrder, "part {n} after part {last}"));
            }
            last = n;
            let file = part_file(&dir, n)?;
            let hash = tokio::fs::read_to_string(file.with_extension("etag"))
                .await
                .map_err(|_| s3_error!(InvalidPart, "part {n} was not uploaded"))?;
            if p.e_tag.as_ref().is_some_and(|t| t.value() != hash) {
                return Err(s3_error!(InvalidPart, "part {n}: ETag does not match the part uploaded"));
            }
            let mut f = tokio::fs::File::open(&file).await.map_err(io_err)?;
            tokio::io::copy(&mut f, &mut out).await.map_err(io_err)?;
        }
        out.sync_data().await.map_err(io_err)?;
        drop(out);
        let written = put_staged(cluster, &path, &whole.0).await?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(written_etag(&written.etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.cluster(&req)?;
        let dir = self.upload_dir(&req.input.upload_id)?;
        tokio::fs::remove_dir_all(&dir).await.map_err(io_err)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

fn is_exists(e: &ProtocolError) -> bool {
    matches!(e, ProtocolError::Remote { code: ErrorCode::Exists, .. })
}

/// Reads and drops a body; its length.
async fn body_len(body: Option<StreamingBlob>) -> S3Result<u64> {
    let mut len = 0u64;
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            len += chunk.map_err(|e| s3_error!(IncompleteBody, "reading the request body: {e}"))?.len() as u64;
        }
    }
    Ok(len)
}

/// Deletes the object (or, for a folder key, the empty directory) at
/// `path`; deleting what is not there succeeds, as S3's does.
async fn delete(cluster: &Cluster, path: &str, folder: bool) -> S3Result<()> {
    let done = if folder { cluster.rmdir(path).await } else { cluster.delete(path).await };
    match done {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(s3_err(e, path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(etag: &str, origin: &str) -> ObjectInfo {
        ObjectInfo {
            kind: EntryKind::File,
            size: 10,
            mtime_ms: 1,
            etag: etag.into(),
            persisted: origin.is_empty(),
            origin: origin.into(),
        }
    }

    #[test]
    fn an_objects_etag_stays_when_its_bytes_reach_the_store() {
        // While pending, the node's tag is the journal's; once uploaded the
        // store's, with the journal's kept as its origin.
        let pending = etag(&info("~journal-7", ""));
        let stored = etag(&info("\"0f3a-1b\"", "~journal-7"));
        assert_eq!(pending.value(), stored.value());
        // An object the store had all along keeps the store's tag, unquoted.
        assert_eq!(etag(&info("\"abc\"", "")).value(), "abc");
    }
}
