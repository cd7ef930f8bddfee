//! The newest WAL segment in a Barman Cloud archive, read from the container itself.
//!
//! `barman-cloud-wal-archive` (which the Barman Cloud Plugin runs as PostgreSQL's
//! `archive_command`) stores each segment as `{serverName}/wals/{first 16 hex digits}/{segment}`,
//! with a compression suffix when one is configured; timeline history files sit directly under
//! `wals/`, and backup labels and partial segments carry their own suffixes. Segment names sort
//! by timeline, then position, so the newest segment is the greatest name. A blob's
//! `Last-Modified` is when its upload finished: the moment that segment became restorable.
//!
//! Listing a whole archive costs one request per 5,000 segments; once the newest segment is
//! known, a probe lists only the directory it is in, and looks further (the next directory, then
//! the next timeline) only when that directory holds nothing newer.

use jiff::Timestamp;

use crate::blob::BlobStore;
use crate::error::Result;
use crate::names::ContainerName;

/// Compression suffixes `barman-cloud-wal-archive` may add.
const COMPRESSION_SUFFIXES: &[&str] = &[".gz", ".bz2", ".xz", ".snappy", ".lz4", ".zst"];

/// A WAL segment's name: timeline, log and segment number, 24 hexadecimal digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalSegment(String);

impl WalSegment {
    /// The segment a blob name (the part after the last `/`) stores, if it stores one: backup
    /// labels, history files and partial segments are not segments.
    pub fn from_file_name(file: &str) -> Option<Self> {
        let stem = COMPRESSION_SUFFIXES
            .iter()
            .find_map(|suffix| file.strip_suffix(suffix))
            .unwrap_or(file);
        Self::parse(stem)
    }

    /// Parses exactly 24 hexadecimal digits (upper case, as PostgreSQL names segments).
    pub fn parse(name: &str) -> Option<Self> {
        (name.len() == 24
            && name
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
        .then(|| Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn timeline(&self) -> u32 {
        u32::from_str_radix(&self.0[..8], 16).unwrap_or(0)
    }

    fn log(&self) -> u32 {
        u32::from_str_radix(&self.0[8..16], 16).unwrap_or(0)
    }

    /// The directory (`{timeline}{log}`) Barman keeps this segment in.
    fn directory(&self) -> &str {
        &self.0[..16]
    }
}

impl std::fmt::Display for WalSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The newest segment in an archive and when it was uploaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedWal {
    pub segment: WalSegment,
    pub archived_at: Timestamp,
}

/// One blob as a listing returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedBlob {
    pub name: String,
    pub last_modified: Option<Timestamp>,
}

/// The prefixes a probe lists, in order, given the newest segment found before (`None`: the
/// whole archive). A later prefix is listed only when the earlier ones held nothing newer.
pub fn probe_prefixes(server_name: &str, known: Option<&WalSegment>) -> Vec<String> {
    let wals = format!("{server_name}/wals/");
    let Some(known) = known else {
        return vec![wals];
    };
    let mut prefixes = vec![format!("{wals}{}/", known.directory())];
    if let Some(log) = known.log().checked_add(1) {
        prefixes.push(format!("{wals}{:08X}{log:08X}/", known.timeline()));
    }
    if let Some(timeline) = known.timeline().checked_add(1) {
        // After a promotion the new primary archives on the next timeline, from the same log.
        prefixes.push(format!("{wals}{timeline:08X}"));
    }
    prefixes
}

/// The greatest segment among `blobs` with its upload time; blobs without a time are skipped.
pub fn newest_segment<'a>(blobs: impl IntoIterator<Item = &'a ListedBlob>) -> Option<ArchivedWal> {
    blobs
        .into_iter()
        .filter_map(|blob| {
            let file = blob.name.rsplit('/').next()?;
            Some(ArchivedWal {
                segment: WalSegment::from_file_name(file)?,
                archived_at: blob.last_modified?,
            })
        })
        .max_by(|a, b| a.segment.cmp(&b.segment))
}

/// The newest WAL segment `server_name` has archived into `container`, listing as little as
/// [`probe_prefixes`] allows. `known` is the newest segment a previous probe found; the result
/// is never older than it while it is still in the archive. `None`: no segment at all.
pub async fn newest_archived_wal(
    store: &dyn BlobStore,
    container: &ContainerName,
    server_name: &str,
    known: Option<&WalSegment>,
) -> Result<Option<ArchivedWal>> {
    let mut newest: Option<ArchivedWal> = None;
    for prefix in probe_prefixes(server_name, known) {
        let blobs = store.list_blobs(container, &prefix).await?;
        if let Some(found) = newest_segment(&blobs)
            && newest.as_ref().is_none_or(|n| found.segment > n.segment)
        {
            newest = Some(found);
        }
        if newest
            .as_ref()
            .is_some_and(|n| known.is_none_or(|k| n.segment > *k))
        {
            break;
        }
    }
    if newest.is_none() && known.is_some() {
        // The segment found before is gone (retention, or the archive was emptied): look at
        // the whole archive once.
        let blobs = store
            .list_blobs(container, &probe_prefixes(server_name, None)[0])
            .await?;
        return Ok(newest_segment(&blobs));
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(name: &str, second: i64) -> ListedBlob {
        ListedBlob {
            name: name.into(),
            last_modified: Timestamp::from_second(second).ok(),
        }
    }

    #[test]
    fn only_segments_count() {
        for name in [
            "000000010000000000000003",
            "000000010000000000000003.gz",
            "000000010000000000000003.zst",
        ] {
            assert_eq!(
                WalSegment::from_file_name(name).map(|s| s.to_string()),
                Some("000000010000000000000003".to_string()),
                "{name}"
            );
        }
        for name in [
            "00000002.history",
            "000000010000000000000003.00000028.backup",
            "000000010000000000000003.partial",
            "00000001000000000000000g",
            "000000010000000000000003.tar",
            "0000000100000000000003",
        ] {
            assert_eq!(WalSegment::from_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn the_newest_is_the_greatest_name_not_the_latest_upload() {
        let blobs = [
            blob("db/wals/0000000100000000/000000010000000000000009", 300),
            blob("db/wals/0000000100000001/000000010000000100000000.gz", 200),
            blob("db/wals/00000002.history", 900),
            blob(
                "db/wals/0000000100000000/000000010000000000000002.00000028.backup",
                800,
            ),
        ];
        let newest = newest_segment(&blobs).unwrap();
        assert_eq!(newest.segment.as_str(), "000000010000000100000000");
        assert_eq!(newest.archived_at.as_second(), 200);
        assert_eq!(newest_segment(&blobs[2..]), None);
    }

    #[test]
    fn a_known_segment_narrows_the_listing() {
        assert_eq!(probe_prefixes("db", None), vec!["db/wals/".to_string()]);
        let known = WalSegment::parse("0000000100000000000000FF").unwrap();
        assert_eq!(
            probe_prefixes("db", Some(&known)),
            vec![
                "db/wals/0000000100000000/".to_string(),
                "db/wals/0000000100000001/".to_string(),
                "db/wals/00000002".to_string(),
            ]
        );
        let known = WalSegment::parse("0000000A0000001F00000001").unwrap();
        assert_eq!(
            probe_prefixes("db", Some(&known))[1..],
            [
                "db/wals/0000000A00000020/".to_string(),
                "db/wals/0000000B".to_string()
            ]
        );
    }
}
