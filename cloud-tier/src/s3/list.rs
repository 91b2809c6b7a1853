//! ListObjects over a namespace of directories.
//!
//! Keys come out in byte order, as S3 lists them: a walk that visits each
//! directory's entries sorted by name, a directory's name taken with its
//! trailing `/`, yields every key of the subtree in order, because all of
//! them share that prefix. So a page of 1000 keys stops the walk as soon
//! as it is full, subtrees wholly before the continuation point are never
//! listed, and with the delimiter `/` only the prefix's own directory is.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use s3s::dto::*;
use s3s::{s3_error, S3Result};

use ferry_protocol::client::Cluster;
use ferry_protocol::codec::{DirEntry, EntryKind};

use super::{etag, is_not_found, ns_path, s3_err, size, timestamp};

/// The most keys one page holds (S3's limit too).
const MAX_KEYS: i32 = 1000;

/// What `encoding-type=url` leaves as it is: unreserved characters and `/`.
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// An entry of a directory being walked: an object, or a directory (its
/// key ends in `/`).
enum Item {
    Object(String, DirEntry),
    Dir(String),
}

impl Item {
    fn key(&self) -> &str {
        match self {
            Item::Object(k, _) | Item::Dir(k) => k,
        }
    }
}

/// ListObjectsV2 of `input` through `cluster`.
pub(super) async fn objects_v2(cluster: &Cluster, input: ListObjectsV2Input) -> S3Result<ListObjectsV2Output> {
    let bucket_path = ns_path(&input.bucket, "")?;
    match cluster.stat(&bucket_path).await {
        Ok(info) if info.kind == EntryKind::Dir => {}
        Ok(_) => return Err(s3_error!(NoSuchBucket)),
        Err(e) if is_not_found(&e) => return Err(s3_error!(NoSuchBucket)),
        Err(e) => return Err(s3_err(e, &bucket_path)),
    }
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
    let max = input.max_keys.unwrap_or(MAX_KEYS).clamp(0, MAX_KEYS) as usize;
    let after = match (input.continuation_token.as_deref(), input.start_after.as_deref()) {
        (Some(t), Some(s)) => Some(t.max(s).to_string()),
        (Some(t), None) => Some(t.to_string()),
        (None, Some(s)) => Some(s.to_string()),
        (None, None) => None,
    };

    let mut contents = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut last: Option<String> = None;
    let mut truncated = false;

    // The directory that holds every key with this prefix.
    let start = prefix[..prefix.rfind('/').map_or(0, |i| i + 1)].to_string();
    let mut stack: Vec<std::vec::IntoIter<Item>> = vec![dir_items(cluster, &input.bucket, &start).await?.into_iter()];
    'walk: while let Some(top) = stack.last_mut() {
        let Some(item) = top.next() else {
            stack.pop();
            continue;
        };
        let key = item.key().to_string();
        if !key.starts_with(&prefix) && !prefix.starts_with(&key) {
            continue;
        }
        // Everything below a directory key shares it: wholly before the
        // continuation point unless that point lies inside it.
        if let (Item::Dir(_), Some(a)) = (&item, &after) {
            if key.as_str() < a.as_str() && !a.starts_with(&key) {
                continue;
            }
        }
        // The common prefix this key rolls up into: it covers the key's
        // whole subtree, so a directory is not walked then.
        let rolled = delimiter.as_deref().and_then(|d| {
            let rest = key.get(prefix.len()..)?;
            rest.find(d).map(|i| key[..prefix.len() + i + d.len()].to_string())
        });
        let emit = match (item, rolled) {
            (_, Some(cp)) => {
                if prefixes.last() == Some(&cp) || after.as_deref().is_some_and(|a| cp.as_str() <= a) {
                    continue;
                }
                Some(Emit::Prefix(cp))
            }
            (Item::Dir(d), None) => {
                stack.push(dir_items(cluster, &input.bucket, &d).await?.into_iter());
                None
            }
            (Item::Object(k, e), None) => {
                if !k.starts_with(&prefix) || after.as_deref().is_some_and(|a| k.as_str() <= a) {
                    continue;
                }
                Some(Emit::Object(k, e))
            }
        };
        let Some(emit) = emit else { continue };
        if contents.len() + prefixes.len() == max {
            truncated = true;
            break 'walk;
        }
        match emit {
            Emit::Prefix(cp) => {
                last = Some(cp.clone());
                prefixes.push(cp);
            }
            Emit::Object(k, e) => {
                last = Some(k.clone());
                contents.push(Object {
                    e_tag: Some(etag(&e.info)),
                    last_modified: Some(timestamp(e.info.mtime_ms)),
                    size: Some(size(e.info.size)),
                    storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                    key: Some(k),
                    ..Default::default()
                });
            }
        }
    }

    let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
    let enc = |s: String| if url { utf8_percent_encode(&s, KEY_SET).to_string() } else { s };
    let key_count = (contents.len() + prefixes.len()) as i32;
    for o in &mut contents {
        o.key = o.key.take().map(enc);
    }
    Ok(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(enc(prefix)),
        delimiter: delimiter.map(enc),
        max_keys: Some(max as i32),
        key_count: Some(key_count),
        is_truncated: Some(truncated),
        contents: Some(contents),
        common_prefixes: Some(prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect()),
        continuation_token: input.continuation_token,
        next_continuation_token: if truncated { last } else { None },
        start_after: input.start_after.map(enc),
        encoding_type: input.encoding_type,
        ..Default::default()
    })
}

enum Emit {
    Prefix(String),
    Object(String, DirEntry),
}

/// The entries of directory `dir` (a key prefix ending in `/`, or empty for
/// the bucket itself) as keys in walk order; a directory that is not there
/// has none.
async fn dir_items(cluster: &Cluster, bucket: &str, dir: &str) -> S3Result<Vec<Item>> {
    let path = ns_path(bucket, dir)?;
    let entries = match cluster.list(&path).await {
        Ok(e) => e,
        Err(e) if is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(s3_err(e, &path)),
    };
    let mut items: Vec<Item> = entries
        .into_iter()
        .map(|e| match e.info.kind {
            EntryKind::Dir => Item::Dir(format!("{dir}{}/", e.name)),
            EntryKind::File => Item::Object(format!("{dir}{}", e.name), e),
        })
        .collect();
    items.sort_by(|a, b| a.key().cmp(b.key()));
    Ok(items)
}
