//! The IDX file format (as used by MNIST, Fashion-MNIST and KMNIST): header
//! parsing with explicit big-endian reads, full validation, and a file type
//! that serves the payload from a memory map without copying.
//!
//! Layout: two zero bytes, an element-type code, a dimension count `n`, then
//! `n` big-endian `u32` sizes, then the elements in row-major order.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::error::DataError;

/// Magic number of an unsigned-byte, one-dimensional IDX file (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Magic number of an unsigned-byte, three-dimensional IDX file (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;

/// Element-type code of unsigned bytes, the only type vcortex loads.
const TYPE_U8: u8 = 0x08;

/// What went wrong in an IDX header or body. Paired with a file name by
/// [`DataError::Idx`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdxError {
    /// Fewer bytes than the header needs.
    TruncatedHeader { needed: usize, found: usize },
    /// The first two bytes are not zero, or the type code is not an IDX one.
    BadMagic { magic: u32 },
    /// A valid IDX type code other than unsigned bytes.
    UnsupportedElementType { code: u8 },
    /// The header declares zero dimensions.
    NoDimensions,
    /// The dimension count is not what this file's role needs.
    WrongDimensionCount {
        role: IdxRole,
        expected: usize,
        found: usize,
    },
    /// The product of the dimensions (or the total file size) does not fit a `usize`.
    SizeOverflow { dims: Vec<u32> },
    /// The file is not exactly as long as the header says.
    LengthMismatch { expected: usize, found: usize },
}

/// The role a file plays in a dataset, which fixes its dimension count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdxRole {
    /// `count` label bytes: one dimension.
    Labels,
    /// `count x rows x cols` pixel bytes: three dimensions.
    Images,
}

impl IdxRole {
    /// How many dimensions a file of this role has.
    pub fn dimension_count(self) -> usize {
        match self {
            IdxRole::Labels => 1,
            IdxRole::Images => 3,
        }
    }

    fn magic(self) -> u32 {
        match self {
            IdxRole::Labels => LABELS_MAGIC,
            IdxRole::Images => IMAGES_MAGIC,
        }
    }
}

impl fmt::Display for IdxRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdxRole::Labels => write!(f, "a label file"),
            IdxRole::Images => write!(f, "an image file"),
        }
    }
}

fn element_type_name(code: u8) -> Option<&'static str> {
    match code {
        0x08 => Some("unsigned byte"),
        0x09 => Some("signed byte"),
        0x0B => Some("i16"),
        0x0C => Some("i32"),
        0x0D => Some("f32"),
        0x0E => Some("f64"),
        _ => None,
    }
}

impl fmt::Display for IdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdxError::TruncatedHeader { needed, found } => write!(
                f,
                "truncated IDX header: it needs {needed} bytes but the file has {found}"
            ),
            IdxError::BadMagic { magic } => write!(
                f,
                "bad magic number {magic:#010x}: not an IDX file (expected {LABELS_MAGIC:#010x} \
                 for labels or {IMAGES_MAGIC:#010x} for images)"
            ),
            IdxError::UnsupportedElementType { code } => write!(
                f,
                "unsupported element type {} (IDX type code {code:#04x}); only unsigned bytes \
                 (0x08) are supported",
                element_type_name(*code).unwrap_or("unknown")
            ),
            IdxError::NoDimensions => write!(f, "IDX header declares zero dimensions"),
            IdxError::WrongDimensionCount {
                role,
                expected,
                found,
            } => write!(
                f,
                "expected {role} (magic {:#010x}, {expected} dimension{}) but the header \
                 declares {found} dimension{}",
                role.magic(),
                plural(*expected),
                plural(*found)
            ),
            IdxError::SizeOverflow { dims } => {
                write!(f, "dimensions ")?;
                for (i, d) in dims.iter().enumerate() {
                    if i > 0 {
                        write!(f, "x")?;
                    }
                    write!(f, "{d}")?;
                }
                write!(f, " overflow the addressable size")
            }
            IdxError::LengthMismatch { expected, found } => write!(
                f,
                "the header implies a file of {expected} bytes but it has {found} ({})",
                if found < expected {
                    "truncated"
                } else {
                    "trailing bytes"
                }
            ),
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl std::error::Error for IdxError {}

/// A parsed, validated IDX header of an unsigned-byte file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxHeader {
    /// The sizes, outermost first (for images: count, rows, cols).
    pub dims: Vec<usize>,
    /// Bytes before the payload: `4 + 4 * dims.len()`.
    pub header_len: usize,
    /// Payload bytes: the product of `dims` (one byte per element).
    pub data_len: usize,
}

impl IdxHeader {
    /// The whole file's size as the header implies it (cannot overflow: checked when parsed).
    pub fn file_len(&self) -> usize {
        self.header_len + self.data_len
    }

    /// Checks that the header has the dimension count of `role`.
    pub fn check_role(&self, role: IdxRole) -> Result<(), IdxError> {
        if self.dims.len() == role.dimension_count() {
            Ok(())
        } else {
            Err(IdxError::WrongDimensionCount {
                role,
                expected: role.dimension_count(),
                found: self.dims.len(),
            })
        }
    }
}

/// The role a dataset file's name gives it (MNIST's naming:
/// `train-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, with or without
/// `.gz` or a cache prefix), if any.
pub fn role_of_name(name: &str) -> Option<IdxRole> {
    if name.contains("-images-") {
        Some(IdxRole::Images)
    } else if name.contains("-labels-") {
        Some(IdxRole::Labels)
    } else {
        None
    }
}

fn read_be_u32(bytes: &[u8], offset: usize) -> u32 {
    let word: [u8; 4] = bytes[offset..offset + 4]
        .try_into()
        .expect("caller checked the length");
    u32::from_be_bytes(word)
}

/// How many bytes the header occupies, read from its first 4 bytes.
/// Checks the magic and type code; the result is at most `4 + 4 * 255`.
pub fn idx_header_len(prefix: &[u8]) -> Result<usize, IdxError> {
    if prefix.len() < 4 {
        return Err(IdxError::TruncatedHeader {
            needed: 4,
            found: prefix.len(),
        });
    }
    let magic = read_be_u32(prefix, 0);
    let code = prefix[2];
    if prefix[0] != 0 || prefix[1] != 0 || element_type_name(code).is_none() {
        return Err(IdxError::BadMagic { magic });
    }
    if code != TYPE_U8 {
        return Err(IdxError::UnsupportedElementType { code });
    }
    let dimension_count = usize::from(prefix[3]);
    if dimension_count == 0 {
        return Err(IdxError::NoDimensions);
    }
    Ok(4 + 4 * dimension_count)
}

/// Parses and validates the header at the start of `bytes`, which may hold
/// just the header or the whole file; the payload length is not checked
/// (see [`parse_idx`]). Allocates only after the header's bytes are known to
/// be present, so at most `bytes.len()` worth of sizes.
pub fn parse_idx_header(bytes: &[u8]) -> Result<IdxHeader, IdxError> {
    let header_len = idx_header_len(bytes)?;
    if bytes.len() < header_len {
        return Err(IdxError::TruncatedHeader {
            needed: header_len,
            found: bytes.len(),
        });
    }
    let raw_dims: Vec<u32> = (4..header_len)
        .step_by(4)
        .map(|offset| read_be_u32(bytes, offset))
        .collect();
    let overflow = || IdxError::SizeOverflow {
        dims: raw_dims.clone(),
    };
    let mut dims = Vec::with_capacity(raw_dims.len());
    for &d in &raw_dims {
        dims.push(usize::try_from(d).map_err(|_| overflow())?);
    }
    // A zero anywhere makes the product zero, even if a prefix would overflow.
    let data_len = if dims.contains(&0) {
        0
    } else {
        dims.iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(overflow)?
    };
    if data_len.checked_add(header_len).is_none() {
        return Err(overflow());
    }
    Ok(IdxHeader {
        dims,
        header_len,
        data_len,
    })
}

/// Parses the header of a whole IDX file held in `bytes` and checks that the
/// file is exactly as long as the header implies.
pub fn parse_idx(bytes: &[u8]) -> Result<IdxHeader, IdxError> {
    let header = parse_idx_header(bytes)?;
    if bytes.len() != header.file_len() {
        return Err(IdxError::LengthMismatch {
            expected: header.file_len(),
            found: bytes.len(),
        });
    }
    Ok(header)
}

/// Where an [`IdxFile`]'s bytes live.
#[derive(Debug)]
enum Storage {
    /// A read-only memory map of the raw file.
    Mapped(Mmap),
    /// Decompressed into memory (when no cache directory is writable), or empty.
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned(bytes) => bytes,
        }
    }
}

/// A validated IDX file of unsigned bytes whose payload is served without copying.
#[derive(Debug)]
pub struct IdxFile {
    path: PathBuf,
    header: IdxHeader,
    storage: Storage,
}

impl IdxFile {
    /// Memory-maps the raw IDX file at `path` and validates it (header, exact length).
    pub fn open(path: &Path) -> Result<IdxFile, DataError> {
        let io_error = |action, source| DataError::Io {
            path: path.to_path_buf(),
            action,
            source,
        };
        // Checked before opening: opening a named pipe blocks until a writer
        // appears, and a device file never ends.
        let not_a_file = || DataError::NotAFile {
            path: path.to_path_buf(),
        };
        let before = std::fs::metadata(path).map_err(|e| io_error("read metadata of", e))?;
        if !before.is_file() {
            return Err(not_a_file());
        }
        let file = File::open(path).map_err(|e| io_error("open", e))?;
        let metadata = file
            .metadata()
            .map_err(|e| io_error("read metadata of", e))?;
        if !metadata.is_file() {
            return Err(not_a_file());
        }
        let storage = if metadata.len() == 0 {
            // Some platforms refuse to map an empty file; it is invalid anyway.
            Storage::Owned(Vec::new())
        } else {
            Storage::Mapped(map_read_only(&file).map_err(|e| io_error("memory-map", e))?)
        };
        Self::validate(path.to_path_buf(), storage)
    }

    /// Validates an IDX file already held in memory; `path` names it in errors.
    pub fn from_bytes(path: PathBuf, bytes: Vec<u8>) -> Result<IdxFile, DataError> {
        Self::validate(path, Storage::Owned(bytes))
    }

    fn validate(path: PathBuf, storage: Storage) -> Result<IdxFile, DataError> {
        // A file named for its role is checked for that role's dimension
        // count before its length: a wrong magic then says so, instead of
        // a length that follows from reading pixels as dimensions.
        if let Some(role) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(role_of_name)
        {
            if let Ok(header) = parse_idx_header(storage.bytes()) {
                if let Err(source) = header.check_role(role) {
                    return Err(DataError::Idx { path, source });
                }
            }
        }
        match parse_idx(storage.bytes()) {
            Ok(header) => Ok(IdxFile {
                path,
                header,
                storage,
            }),
            Err(source) => Err(DataError::Idx { path, source }),
        }
    }

    /// The file this came from (for a decompressed file: the raw path or the `.gz`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The validated header.
    pub fn header(&self) -> &IdxHeader {
        &self.header
    }

    /// The payload: `header().data_len` bytes after the header.
    pub fn data(&self) -> &[u8] {
        &self.storage.bytes()[self.header.header_len..]
    }

    /// Whether the payload is served from a memory map (rather than from memory).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }

    /// Checks the dimension count for `role`, naming this file on failure.
    pub fn check_role(&self, role: IdxRole) -> Result<(), DataError> {
        self.header
            .check_role(role)
            .map_err(|source| DataError::Idx {
                path: self.path.clone(),
                source,
            })
    }
}

/// Maps `file` read-only.
#[allow(unsafe_code)]
fn map_read_only(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: `Mmap::map` is unsafe because another process could truncate or
    // rewrite the file while it is mapped. vcortex never writes a file it has
    // mapped: caches are written to a temporary file and renamed over, which
    // leaves existing maps on the old inode intact. Editing dataset files in
    // place during a run is outside what vcortex supports.
    unsafe { Mmap::map(file) }
}
