//! A TIFF's first image file directory (the full-resolution image): its fields and where their
//! values are in the file. [`Tiff`](crate::Tiff) reads an image through it; Tessera's engine
//! reads block offsets through it (to read blocks ahead, and to fill in the tile arrays of a
//! GeoTIFF it writes).

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::{Result, corrupt, unsupported};

/// The most entries a directory may have, and the most values a field may hold here: bounds
/// on what a damaged file can make a reader allocate.
const MAX_ENTRIES: u64 = 4096;
const MAX_VALUES: u64 = 1 << 28;

/// One entry of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub tag: u16,
    /// TIFF's field type: 2 ASCII, 3 SHORT, 4 LONG, 12 DOUBLE, 16 LONG8, …
    pub field_type: u16,
    pub count: u64,
    /// The file offset of the first value (inside the entry when the values fit there).
    pub at: u64,
}

impl Field {
    /// Bytes per value; `None` for a type TIFF does not define.
    fn value_size(&self) -> Option<u64> {
        Some(match self.field_type {
            1 | 2 | 6 | 7 => 1,
            3 | 8 => 2,
            4 | 9 | 11 => 4,
            5 | 10 | 12 | 16 | 17 => 8,
            _ => return None,
        })
    }
}

/// The fields of a file's first directory.
#[derive(Debug, Clone)]
pub struct Directory {
    pub fields: Vec<Field>,
    /// BigTIFF (8-byte offsets) rather than classic TIFF.
    pub big: bool,
    /// The file's length: no value lies past it.
    len: u64,
}

impl Directory {
    /// The first directory of a little-endian TIFF or BigTIFF; big-endian files are
    /// [`Unsupported`](crate::Error::Unsupported), anything else not a TIFF is
    /// [`Corrupt`](crate::Error::Corrupt).
    pub fn first(file: &File) -> Result<Directory> {
        let len = file.metadata()?.len();
        let mut head = [0u8; 16];
        let n = read_some(file, 0, &mut head)?;
        if n < 8 {
            return Err(corrupt("shorter than a TIFF header"));
        }
        if &head[..2] == b"MM" {
            return Err(unsupported("big-endian"));
        }
        if &head[..2] != b"II" {
            return Err(corrupt("no TIFF byte-order mark"));
        }
        let big = match u16::from_le_bytes([head[2], head[3]]) {
            42 => false,
            43 if n >= 16 => true,
            v => return Err(corrupt(format!("version {v}"))),
        };
        let ifd = if big {
            u64::from_le_bytes(head[8..16].try_into().unwrap_or_default())
        } else {
            u32::from_le_bytes(head[4..8].try_into().unwrap_or_default()) as u64
        };
        let (count_len, entry_len, value_len) = if big { (8, 20, 8) } else { (2, 12, 4) };
        let mut count = [0u8; 8];
        if ifd == 0 || read_some(file, ifd, &mut count[..count_len])? != count_len {
            return Err(corrupt(format!("no image directory at {ifd}")));
        }
        let entries = u64::from_le_bytes(count);
        if entries == 0 || entries > MAX_ENTRIES {
            return Err(corrupt(format!("an image directory of {entries} entries")));
        }
        let mut raw = vec![0u8; entries as usize * entry_len];
        if read_some(file, ifd + count_len as u64, &mut raw)? != raw.len() {
            return Err(corrupt("the image directory is cut off"));
        }
        let fields = raw
            .chunks_exact(entry_len)
            .enumerate()
            .map(|(i, e)| {
                let word = |b: &[u8]| {
                    let mut v = [0u8; 8];
                    v[..b.len()].copy_from_slice(b);
                    u64::from_le_bytes(v)
                };
                let mut field = Field {
                    tag: u16::from_le_bytes([e[0], e[1]]),
                    field_type: u16::from_le_bytes([e[2], e[3]]),
                    count: word(&e[4..4 + value_len]),
                    at: 0,
                };
                let entry_at = ifd + count_len as u64 + (i * entry_len) as u64;
                let inline = field
                    .value_size()
                    .is_some_and(|s| field.count.saturating_mul(s) <= value_len as u64);
                field.at = if inline {
                    entry_at + 4 + value_len as u64
                } else {
                    word(&e[4 + value_len..4 + 2 * value_len])
                };
                field
            })
            .collect();
        Ok(Directory { fields, big, len })
    }

    /// The field with this tag.
    pub fn field(&self, tag: u16) -> Option<Field> {
        self.fields.iter().find(|f| f.tag == tag).copied()
    }

    /// A field's values as bytes, checked against the file's length.
    pub fn bytes(&self, file: &File, f: &Field) -> Result<Vec<u8>> {
        let size = f
            .value_size()
            .ok_or_else(|| corrupt(format!("tag {} has unknown type {}", f.tag, f.field_type)))?;
        if f.count > MAX_VALUES {
            return Err(corrupt(format!("tag {} holds {} values", f.tag, f.count)));
        }
        let total = size * f.count;
        if f.at.checked_add(total).is_none_or(|end| end > self.len) {
            return Err(corrupt(format!("tag {}'s values are past the end", f.tag)));
        }
        let mut buf = vec![0u8; total as usize];
        if read_some(file, f.at, &mut buf)? != buf.len() {
            return Err(corrupt(format!("tag {}'s values are cut off", f.tag)));
        }
        Ok(buf)
    }

    /// A field's values as unsigned integers (BYTE, UNDEFINED, SHORT, LONG or LONG8).
    pub fn ints(&self, file: &File, f: &Field) -> Result<Vec<u64>> {
        let b = self.bytes(file, f)?;
        let size = match f.field_type {
            1 | 7 => 1,
            3 => 2,
            4 => 4,
            16 => 8,
            k => {
                return Err(corrupt(format!(
                    "tag {} has type {k}, not an integer",
                    f.tag
                )));
            }
        };
        Ok(b.chunks_exact(size)
            .map(|c| {
                let mut v = [0u8; 8];
                v[..size].copy_from_slice(c);
                u64::from_le_bytes(v)
            })
            .collect())
    }

    /// The first value of an integer field, or `default` when the directory has none.
    pub fn int(&self, file: &File, tag: u16, default: Option<u64>) -> Result<u64> {
        match self.field(tag) {
            Some(f) => self
                .ints(file, &f)?
                .first()
                .copied()
                .ok_or_else(|| corrupt(format!("tag {tag} is empty"))),
            None => default.ok_or_else(|| corrupt(format!("no tag {tag}"))),
        }
    }
}

/// Reads as much of `buf` as the file holds from `offset`.
pub fn read_some(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
