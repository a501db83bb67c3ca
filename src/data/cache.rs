//! Decompressing a `.gz` IDX file once into a cache, then mapping the result.
//!
//! Policy (tried in order, see [`LoadOptions::default`]):
//! 1. beside the archive, in the dataset directory (git-ignored there);
//! 2. a per-user cache directory, `$VCORTEX_CACHE_DIR`, else `$XDG_CACHE_HOME/vcortex`,
//!    else `$HOME/.cache/vcortex`, with file names prefixed by the archive's
//!    SHA-256 so that different datasets never collide;
//! 3. in memory (bounded by the header-implied size), when nothing is writable.
//!
//! Every cache file is written to a temporary file, checked (exact size, and the
//! SHA-256 from `SHA256SUMS.raw` where listed) and only then renamed into place,
//! so a cache file that exists is complete. A copy made beside the archive
//! keeps a record of that archive ([`SOURCE_RECORD_SUFFIX`]), so that an
//! archive replaced later is decompressed again instead of shadowed by it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use super::error::DataError;
use super::idx::{idx_header_len, parse_idx_header, IdxError, IdxFile};

/// Deflate cannot expand data by more than 1032:1, so a header claiming more
/// than this many bytes per compressed byte belongs to a truncated or forged
/// archive; rejecting it early bounds disk and memory use by the archive's size.
const MAX_GZIP_RATIO: u64 = 1032;
/// Allowance for gzip headers and tiny archives.
const GZIP_SLACK_BYTES: u64 = 4096;

/// The checksum list of decompressed files that a dataset directory may hold.
pub const RAW_CHECKSUMS: &str = "SHA256SUMS.raw";

/// Where a decompressed file may be cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheLocation {
    /// Next to the `.gz`, under the raw file's name.
    BesideArchive,
    /// In this directory (created if needed), as `<archive sha256 prefix>-<raw name>`.
    Directory(PathBuf),
    /// In memory, for this process only.
    Memory,
}

/// How [`super::Dataset::load_with`] materialises `.gz` files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Cache locations to try in order; an unwritable one is skipped.
    pub cache: Vec<CacheLocation>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        let mut cache = vec![CacheLocation::BesideArchive];
        if let Some(dir) = default_cache_dir() {
            cache.push(CacheLocation::Directory(dir));
        }
        cache.push(CacheLocation::Memory);
        LoadOptions { cache }
    }
}

/// The per-user cache directory used when a dataset directory is read-only.
pub fn default_cache_dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if std::env::var_os("VCORTEX_CACHE_DIR").is_some_and(|d| !Path::new(&d).is_absolute()) {
        crate::note!("note: VCORTEX_CACHE_DIR is ignored: it must be an absolute path");
    }
    absolute("VCORTEX_CACHE_DIR")
        .or_else(|| absolute("XDG_CACHE_HOME").map(|p| p.join("vcortex")))
        .or_else(|| absolute("HOME").map(|p| p.join(".cache").join("vcortex")))
}

/// Expected SHA-256 digests (lower-case hex) of files in one directory.
#[derive(Clone, Debug, Default)]
pub struct ChecksumList {
    path: PathBuf,
    entries: Vec<(String, String)>,
}

impl ChecksumList {
    /// Reads `dir/SHA256SUMS.raw` if it exists (an empty list otherwise).
    pub fn read_raw_list(dir: &Path) -> Result<ChecksumList, DataError> {
        let path = dir.join(RAW_CHECKSUMS);
        // A named pipe would block the read: only a regular file is read.
        if path.exists() && !path.is_file() {
            return Err(DataError::NotAFile { path });
        }
        match fs::read_to_string(&path) {
            Ok(text) => ChecksumList::parse(path, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ChecksumList {
                path,
                entries: Vec::new(),
            }),
            Err(source) => Err(DataError::Io {
                path,
                action: "read",
                source,
            }),
        }
    }

    /// Parses `sha256sum` output: `<hex>  <name>` (or `<hex> *<name>`) per line.
    pub fn parse(path: PathBuf, text: &str) -> Result<ChecksumList, DataError> {
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad_line = || DataError::ChecksumList {
                path: path.clone(),
                line: index + 1,
            };
            let (digest, name) = line.split_once(char::is_whitespace).ok_or_else(bad_line)?;
            let name = name.trim_start().trim_start_matches('*').trim_end();
            if digest.len() != 64
                || !digest.bytes().all(|b| b.is_ascii_hexdigit())
                || name.is_empty()
            {
                return Err(bad_line());
            }
            entries.push((name.to_string(), digest.to_ascii_lowercase()));
        }
        Ok(ChecksumList { path, entries })
    }

    /// The expected digest of `name`, if listed.
    pub fn digest_of(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(listed, _)| listed == name)
            .map(|(_, digest)| digest.as_str())
    }

    /// The list's own path (for error messages).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Serialises decompression within the process, so that parallel loads of
/// the same dataset (e.g. concurrent tests) decompress each file once.
static DECOMPRESS_LOCK: Mutex<()> = Mutex::new(());

/// Makes a unique temporary name within the process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why writing to one cache location failed: the location is unusable (try
/// the next one) or the data itself is bad (stop).
enum Failure {
    Unwritable(DataError),
    Data(DataError),
}

/// Opens the IDX file inside the archive `gz`, whose decompressed name is
/// `raw_name`, decompressing it into the first usable cache location.
pub fn open_archive(
    gz: &Path,
    raw_name: &str,
    checksums: &ChecksumList,
    options: &LoadOptions,
) -> Result<IdxFile, DataError> {
    let _guard = DECOMPRESS_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let expected_digest = checksums.digest_of(raw_name);
    let mut last_unwritable = None;
    for location in &options.cache {
        let attempt = match location {
            CacheLocation::BesideArchive => {
                let dir = gz.parent().unwrap_or_else(|| Path::new("."));
                let target = dir.join(raw_name);
                // A raw file that appeared since the caller looked is complete (renamed into place).
                if target.is_file() {
                    return IdxFile::open(&target);
                }
                let made = decompress_to_file(gz, &target, expected_digest, checksums.path());
                if made.is_ok() {
                    record_source(gz, &target);
                }
                made
            }
            CacheLocation::Directory(dir) => {
                let key = file_sha256(gz)?;
                let target = dir.join(format!("{}-{raw_name}", &key[..16]));
                if target.is_file() {
                    match IdxFile::open(&target) {
                        Ok(file) => return Ok(file),
                        // Our own copy, damaged since (the rename into place
                        // only ever publishes whole files): made again below.
                        Err(DataError::Idx { .. }) => {
                            let _ = fs::remove_file(&target);
                        }
                        Err(e) => return Err(e),
                    }
                }
                match fs::create_dir_all(dir) {
                    Ok(()) => decompress_to_file(gz, &target, expected_digest, checksums.path()),
                    Err(source) => Err(Failure::Unwritable(DataError::Io {
                        path: dir.clone(),
                        action: "create cache directory",
                        source,
                    })),
                }
            }
            CacheLocation::Memory => {
                let bytes = decompress_to_memory(gz, expected_digest, checksums.path())?;
                return IdxFile::from_bytes(gz.to_path_buf(), bytes);
            }
        };
        match attempt {
            Ok(target) => return IdxFile::open(&target),
            Err(Failure::Data(e)) => return Err(e),
            Err(Failure::Unwritable(e)) => last_unwritable = Some(e),
        }
    }
    Err(last_unwritable.unwrap_or_else(|| DataError::Io {
        path: gz.to_path_buf(),
        action: "decompress (no cache location configured)",
        source: io::Error::other("empty cache list"),
    }))
}

/// Suffix of the record beside a cache file decompressed next to its
/// archive: the archive's length, modification time and SHA-256, so that an
/// archive replaced later is noticed ([`beside_cache_is_stale`]). A raw file
/// without one is the user's own, and always preferred.
pub const SOURCE_RECORD_SUFFIX: &str = ".from-gz";

fn source_record_path(raw: &Path) -> PathBuf {
    crate::jsonfile::with_suffix(raw, SOURCE_RECORD_SUFFIX)
}

/// The archive's length and modification time (ns since the epoch).
fn archive_stamp(gz: &Path) -> Option<(u64, u128)> {
    let meta = fs::metadata(gz).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((meta.len(), modified.as_nanos()))
}

/// Writes the record of `raw`'s source `gz` (best effort: without it the
/// cache file is taken for the user's own, as before records existed).
fn record_source(gz: &Path, raw: &Path) {
    let (Some((len, modified)), Ok(digest)) = (archive_stamp(gz), file_sha256(gz)) else {
        return;
    };
    let record = format!("{len} {modified} {digest}\n");
    let _ = crate::jsonfile::write_text_atomic(&source_record_path(raw), &record);
}

/// Whether `raw`, decompressed beside its archive `gz` by an earlier run,
/// came from another archive than the one there now (the `.gz` was
/// replaced): the caller then removes it and decompresses again. The
/// archive is hashed only when its length or time changed; a touched but
/// equal archive gets its record refreshed. False for a raw file with no
/// record (the user's own).
pub fn beside_cache_is_stale(raw: &Path, gz: &Path) -> Result<bool, DataError> {
    let record_path = source_record_path(raw);
    let Ok(record) = fs::read_to_string(&record_path) else {
        return Ok(false);
    };
    let mut fields = record.split_whitespace();
    let (len, modified, digest) = (fields.next(), fields.next(), fields.next());
    let stamp = archive_stamp(gz);
    let recorded = len
        .and_then(|l| l.parse::<u64>().ok())
        .zip(modified.and_then(|m| m.parse::<u128>().ok()));
    if stamp.is_some() && stamp == recorded {
        return Ok(false);
    }
    if digest == Some(file_sha256(gz)?.as_str()) {
        record_source(gz, raw);
        return Ok(false);
    }
    Ok(true)
}

/// Removes a stale beside-archive cache file and its record (already gone
/// is fine: another process loading the same directory got there first).
/// The copy goes first: a copy left without its record would pass for the
/// user's own file.
pub fn remove_beside_cache(raw: &Path) -> Result<(), DataError> {
    match fs::remove_file(raw) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => {
            return Err(DataError::Io {
                path: raw.to_path_buf(),
                action: "remove the outdated decompressed copy",
                source,
            })
        }
        _ => {}
    }
    let _ = fs::remove_file(source_record_path(raw));
    Ok(())
}

fn file_sha256(path: &Path) -> Result<String, DataError> {
    let io_error = |source| DataError::Io {
        path: path.to_path_buf(),
        action: "read",
        source,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(io_error)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decompresses into a temporary file beside `target`, then renames it over `target`.
fn decompress_to_file(
    gz: &Path,
    target: &Path,
    expected_digest: Option<&str>,
    list: &Path,
) -> Result<PathBuf, Failure> {
    let dir = target.parent().unwrap_or_else(|| Path::new("."));
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::jsonfile::remove_stale_temp_files(dir, Some(&file_name));
    let temp = dir.join(format!(
        "{file_name}.tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let unwritable = |action, source| {
        Failure::Unwritable(DataError::Io {
            path: temp.clone(),
            action,
            source,
        })
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| unwritable("create cache file", e))?;
    let result = decompress(gz, &mut file, expected_digest, list)
        .and_then(|()| file.sync_all().map_err(|e| unwritable("write", e)))
        .and_then(|()| fs::rename(&temp, target).map_err(|e| unwritable("rename", e)));
    if result.is_err() {
        // Best effort: a leftover temp file is git-ignored and harmless.
        let _ = fs::remove_file(&temp);
    }
    result.map(|()| target.to_path_buf())
}

fn decompress_to_memory(
    gz: &Path,
    expected_digest: Option<&str>,
    list: &Path,
) -> Result<Vec<u8>, DataError> {
    let mut sink = MemorySink {
        path: gz,
        bytes: Vec::new(),
    };
    match decompress(gz, &mut sink, expected_digest, list) {
        Ok(()) => Ok(sink.bytes),
        Err(Failure::Data(e)) | Err(Failure::Unwritable(e)) => Err(e),
    }
}

/// Where decompressed bytes go: learns the header-implied size before the first write.
trait Sink: Write {
    fn expect_total(&mut self, total: usize) -> Result<(), DataError>;
}

impl Sink for File {
    fn expect_total(&mut self, _total: usize) -> Result<(), DataError> {
        Ok(())
    }
}

/// Reserves the exact size once (the size is already bounded by the archive's
/// length), so a failed allocation is a typed error and writes never reallocate.
struct MemorySink<'a> {
    path: &'a Path,
    bytes: Vec<u8>,
}

impl Write for MemorySink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for MemorySink<'_> {
    fn expect_total(&mut self, total: usize) -> Result<(), DataError> {
        self.bytes
            .try_reserve_exact(total)
            .map_err(|_| DataError::OutOfMemory {
                path: self.path.to_path_buf(),
                bytes: total,
            })
    }
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Streams the archive into `sink`, validating the IDX header first and never
/// decompressing more than the header-implied size plus one buffer.
fn decompress(
    gz: &Path,
    sink: &mut dyn Sink,
    expected_digest: Option<&str>,
    list: &Path,
) -> Result<(), Failure> {
    let data_error = |e| Failure::Data(e);
    let io_error = |action, source| {
        Failure::Data(DataError::Io {
            path: gz.to_path_buf(),
            action,
            source,
        })
    };
    let gzip_error = |source| {
        Failure::Data(DataError::Gzip {
            path: gz.to_path_buf(),
            source,
        })
    };
    let idx_error = |source: IdxError| {
        Failure::Data(DataError::Idx {
            path: gz.to_path_buf(),
            source,
        })
    };
    let file = File::open(gz).map_err(|e| io_error("open", e))?;
    let archive_len = file
        .metadata()
        .map_err(|e| io_error("read metadata of", e))?
        .len();
    let mut decoder = MultiGzDecoder::new(BufReader::new(file));

    // The header: 4 bytes give its length, then the dimensions.
    let mut header = [0u8; 4 + 4 * 255];
    let got = read_up_to(&mut decoder, &mut header[..4]).map_err(gzip_error)?;
    let header_len = idx_header_len(&header[..got]).map_err(idx_error)?;
    let got = 4 + read_up_to(&mut decoder, &mut header[4..header_len]).map_err(gzip_error)?;
    let parsed = parse_idx_header(&header[..got]).map_err(idx_error)?;
    // As for a raw file (`IdxFile`): the role's dimension count first.
    let name = gz.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if let Some(role) = super::idx::role_of_name(name) {
        parsed.check_role(role).map_err(idx_error)?;
    }
    let total = parsed.file_len();
    let plausible = archive_len
        .saturating_mul(MAX_GZIP_RATIO)
        .saturating_add(GZIP_SLACK_BYTES);
    if total as u64 > plausible {
        return Err(Failure::Data(DataError::ImplausibleSize {
            path: gz.to_path_buf(),
            claimed: total,
            archive_len,
        }));
    }
    sink.expect_total(total).map_err(data_error)?;

    let sink_error = |source| {
        Failure::Unwritable(DataError::Io {
            path: gz.to_path_buf(),
            action: "write the decompressed data of",
            source,
        })
    };
    let mut hasher = Sha256::new();
    hasher.update(&header[..header_len]);
    sink.write_all(&header[..header_len]).map_err(sink_error)?;
    let mut remaining = parsed.data_len;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Every byte the header gives is out: the archive's end is bad
            // (its last check, or bytes after it that are not gzip).
            Err(e) if remaining == 0 => {
                let e = io::Error::new(e.kind(), format!("{e}, after all of the data"));
                return Err(gzip_error(e));
            }
            Err(e) => return Err(gzip_error(e)),
        };
        if n > remaining {
            return Err(Failure::Data(DataError::GzipTooLarge {
                path: gz.to_path_buf(),
                limit: total as u64,
            }));
        }
        remaining -= n;
        hasher.update(&buf[..n]);
        sink.write_all(&buf[..n]).map_err(sink_error)?;
    }
    if remaining > 0 {
        return Err(idx_error(IdxError::LengthMismatch {
            expected: total,
            found: total - remaining,
        }));
    }
    if let Some(expected) = expected_digest {
        let actual = hex(&hasher.finalize());
        if actual != expected {
            return Err(Failure::Data(DataError::Checksum {
                path: gz.to_path_buf(),
                list: list.to_path_buf(),
                expected: expected.to_string(),
                actual,
            }));
        }
    }
    sink.flush().map_err(sink_error)
}
