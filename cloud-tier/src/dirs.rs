//! Directories that exist in a store on their own, without objects below
//! them: the real directories of a `file://` store, and S3 folder markers
//! (zero-byte objects whose key ends in `/`, as the S3 console, `aws s3api
//! put-object --key dir/`, s3fs and DLIO's S3 storage make them).
//!
//! object_store has no directories: its paths cannot end in `/`, and its
//! local store lists an empty directory as nothing. This module makes and
//! removes them; reading them is the namespace's (a marker is an object
//! whose path equals its listing's prefix; a local directory is a file
//! system entry).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer};
use object_store::path::Path as StorePath;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::NodeError;

/// How S3 wants a key in a request path (`/` kept, everything but
/// unreserved characters escaped): the set object_store signs with.
const KEY_ENCODE_SET: AsciiSet = NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

/// Directories of one mount's store.
#[derive(Debug, Clone)]
pub enum Dirs {
    /// A `file://` store rooted at this directory.
    Local(PathBuf),
    /// An S3 bucket: folder markers.
    S3(Arc<S3Markers>),
}

impl Dirs {
    /// The file system path of `location`, for a local store.
    /// `None` too where it resolves outside the store's root (a link).
    pub fn local_path(&self, location: &StorePath) -> Option<PathBuf> {
        match self {
            Dirs::Local(root) => {
                let p = Self::local(root, location);
                crate::confined::resolves_inside(root, &p).unwrap_or(false).then_some(p)
            }
            Dirs::S3(_) => None,
        }
    }

    /// `location`'s file system path in local store `root`, refused where
    /// it resolves outside the root.
    fn confined(root: &std::path::Path, location: &StorePath) -> Result<PathBuf, NodeError> {
        let p = Self::local(root, location);
        match crate::confined::resolves_inside(root, &p) {
            Ok(true) => Ok(p),
            Ok(false) => Err(NodeError::Unauthorized(crate::confined::Outside(location.to_string()).to_string())),
            Err(e) => Err(NodeError::Io(e)),
        }
    }

    /// The file system path of `location` in a local store rooted at `root`.
    fn local(root: &std::path::Path, location: &StorePath) -> PathBuf {
        // The store's file names are the path's parts as they are (a part
        // `a%41` is the file `a%41`, not `aA`).
        root.join(location.as_ref())
    }

    /// The modification time (ms) of the directory at `location`, when
    /// the store has one there of its own (a local directory). `None` for
    /// stores whose directories are markers (listed, not looked up).
    pub fn local_dir_mtime(&self, location: &StorePath) -> Option<i64> {
        // Asked for each directory of a listing, which the confined store
        // already left links out of: no resolving here (a time is all it gives).
        let Dirs::Local(root) = self else { return None };
        let meta = std::fs::metadata(Self::local(root, location)).ok()?;
        if !meta.is_dir() {
            return None;
        }
        Some(mtime_ms(&meta))
    }

    /// Makes the directory at `location`: a local directory, or a marker.
    /// The caller has checked that nothing is there yet.
    pub async fn make(&self, location: &StorePath) -> Result<(), NodeError> {
        match self {
            Dirs::Local(root) => {
                let p = Self::confined(root, location)?;
                tokio::task::spawn_blocking(move || std::fs::create_dir_all(&p))
                    .await
                    .map_err(|e| NodeError::task("mkdir task", e))?
                    .map_err(NodeError::Io)
            }
            Dirs::S3(s3) => s3.send(http::Method::PUT, location).await,
        }
    }

    /// Removes the (empty) directory at `location`. The caller has checked
    /// that no object is below it.
    pub async fn remove(&self, location: &StorePath) -> Result<(), NodeError> {
        match self {
            Dirs::Local(root) => {
                let p = Self::confined(root, location)?;
                let r = tokio::task::spawn_blocking(move || std::fs::remove_dir(&p))
                    .await
                    .map_err(|e| NodeError::task("rmdir task", e))?;
                match r {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                        Err(NodeError::NotEmpty(location.to_string()))
                    }
                    Err(e) => Err(NodeError::Io(e)),
                }
            }
            Dirs::S3(s3) => s3.send(http::Method::DELETE, location).await,
        }
    }
}

/// The modification time of file system entry `meta`, in ms since the epoch.
pub fn mtime_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Folder markers in one S3 bucket, written with requests signed by the
/// mount's own credentials (the same ones object_store uses).
#[derive(Debug)]
pub struct S3Markers {
    s3: Arc<AmazonS3>,
    /// `https://s3.REGION.amazonaws.com/BUCKET`, `http://host:port/BUCKET`, or a virtual-hosted endpoint.
    bucket_endpoint: String,
    region: String,
    http: reqwest::Client,
}

impl S3Markers {
    /// Markers for the bucket of `builder` (configured, not yet built),
    /// and the store built from it.
    pub fn open(
        builder: AmazonS3Builder,
        bucket: &str,
    ) -> Result<(Arc<AmazonS3>, Arc<S3Markers>), object_store::Error> {
        use object_store::aws::AmazonS3ConfigKey as K;
        let region = builder.get_config_value(&K::Region).unwrap_or_else(|| "us-east-1".into());
        let endpoint = builder.get_config_value(&K::Endpoint);
        let virtual_hosted = builder.get_config_value(&K::VirtualHostedStyleRequest).is_some_and(|v| v == "true");
        let bucket_endpoint = match (endpoint, virtual_hosted) {
            (Some(e), true) => e.trim_end_matches('/').to_string(),
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let s3 = Arc::new(builder.build()?);
        let markers = S3Markers { s3: s3.clone(), bucket_endpoint, region, http: reqwest::Client::new() };
        Ok((s3, Arc::new(markers)))
    }

    /// `method` (PUT or DELETE) on the marker of `location` (key `location/`).
    async fn send(&self, method: http::Method, location: &StorePath) -> Result<(), NodeError> {
        let fail = |what: String| NodeError::store(format!("folder marker {location}/: {what}"));
        let key = format!("{location}/");
        let url = format!("{}/{}", self.bucket_endpoint, utf8_percent_encode(&key, &KEY_ENCODE_SET));
        let credential = self.s3.credentials().get_credential().await.map_err(|e| fail(e.to_string()))?;
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(url.as_str())
            .body(object_store::client::HttpRequestBody::empty())
            .map_err(|e| fail(e.to_string()))?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| fail(e.to_string()))?;
        let mut send = self.http.request(method, url.as_str());
        for (name, value) in request.headers() {
            send = send.header(name, value);
        }
        if request.method() == http::Method::PUT {
            send = send.header(http::header::CONTENT_LENGTH, 0);
        }
        let answer = send.send().await.map_err(|e| fail(e.to_string()))?;
        let status = answer.status();
        if status.is_success() || (request.method() == http::Method::DELETE && status == http::StatusCode::NOT_FOUND) {
            return Ok(());
        }
        let body = answer.text().await.unwrap_or_default();
        Err(fail(format!("{status}: {}", body.chars().take(300).collect::<String>())))
    }
}
