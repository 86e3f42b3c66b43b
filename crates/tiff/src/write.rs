//! A tiled GeoTIFF written tile by tile, in order, under a temporary name.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::append::Appender;
use crate::read::GDAL_NODATA;
use crate::{Codec, GeoTags, SampleType, TagValues};

/// Files whose cells are more than this many bytes are BigTIFF (GDAL's `BIGTIFF=IF_SAFER`: a
/// compressed tile may be larger than its cells).
const BIGTIFF_OVER: u64 = 4_000_000_000;

/// Files whose cells are more than this many bytes are written past the page cache (O_DIRECT),
/// where the file system allows it ([`Appender`]).
pub const DIRECT_OVER: u64 = 1 << 30;

/// What a GeoTIFF holds: its grid, one band's cell type and NoData, its tiles and compression,
/// and the georeferencing tags to write.
#[derive(Debug, Clone)]
pub struct WriterSpec {
    pub width: u64,
    pub height: u64,
    pub sample: SampleType,
    /// Cells per tile (width, height), multiples of 16 as TIFF requires.
    pub tile: (u64, u64),
    pub codec: Codec,
    pub nodata: Option<f64>,
    pub geo: GeoTags,
}

impl WriterSpec {
    /// Tiles across and down.
    pub fn tiles(&self) -> (u64, u64) {
        (
            self.width.div_ceil(self.tile.0),
            self.height.div_ceil(self.tile.1),
        )
    }

    /// The bytes of one tile's cells, uncompressed.
    pub fn tile_bytes(&self) -> usize {
        (self.tile.0 * self.tile.1) as usize * self.sample.bytes()
    }

    /// One tile's cells (little-endian, the tile's full size) as the file stores them: called
    /// on any thread, the result given to [`TiffWriter::append`].
    pub fn encode(&self, cells: Vec<u8>) -> std::io::Result<Vec<u8>> {
        if cells.len() != self.tile_bytes() {
            return Err(std::io::Error::other(format!(
                "a tile of {} bytes, not {}",
                cells.len(),
                self.tile_bytes()
            )));
        }
        self.codec.encode(cells)
    }
}

/// A GeoTIFF being written: tiles are encoded on any thread ([`WriterSpec::encode`]) and
/// appended in row-major order; [`TiffWriter::finish`] writes the directory and puts the file at
/// its name. Dropped unfinished, the temporary file is removed and nothing is left at the name.
#[derive(Debug)]
pub struct TiffWriter {
    spec: WriterSpec,
    /// The file's bytes, directly for a large file.
    file: Appender,
    temp: PathBuf,
    out: PathBuf,
    big: bool,
    pos: u64,
    offsets: Vec<u64>,
    counts: Vec<u64>,
    done: bool,
}

impl TiffWriter {
    /// Starts `out`'s file, as `.{name}.{pid}.tmp.tif` beside it.
    pub fn create(out: &Path, spec: WriterSpec) -> std::io::Result<TiffWriter> {
        TiffWriter::create_with(out, spec, DIRECT_OVER)
    }

    /// [`create`](Self::create), writing past the page cache when the cells are more than
    /// `direct_over` bytes.
    pub fn create_with(
        out: &Path,
        spec: WriterSpec,
        direct_over: u64,
    ) -> std::io::Result<TiffWriter> {
        if spec.width == 0
            || spec.height == 0
            || !spec.tile.0.is_multiple_of(16)
            || !spec.tile.1.is_multiple_of(16)
        {
            return Err(std::io::Error::other(format!(
                "a GeoTIFF of {} x {} cells in tiles of {} x {}",
                spec.width, spec.height, spec.tile.0, spec.tile.1
            )));
        }
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = out
            .file_name()
            .ok_or_else(|| std::io::Error::other("not a file name"))?
            .to_string_lossy();
        let temp = parent.join(format!(".{name}.{}.tmp.tif", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        let cells = spec
            .width
            .saturating_mul(spec.height)
            .saturating_mul(spec.sample.bytes() as u64);
        // From here on the temporary file is removed if anything fails.
        let mut w = TiffWriter {
            file: Appender::new(file, &temp, 0, cells > direct_over)?,
            temp,
            out: out.to_path_buf(),
            big: cells > BIGTIFF_OVER,
            pos: 0,
            offsets: Vec::new(),
            counts: Vec::new(),
            done: false,
            spec,
        };
        // The header; the directory's offset is filled in at the end.
        if w.big {
            w.put(b"II\x2b\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")?;
        } else {
            w.put(b"II\x2a\x00\x00\x00\x00\x00")?;
        }
        Ok(w)
    }

    pub fn spec(&self) -> &WriterSpec {
        &self.spec
    }

    /// Appends the next tile, as [`WriterSpec::encode`] returned it.
    pub fn append(&mut self, encoded: &[u8]) -> std::io::Result<()> {
        let (across, down) = self.spec.tiles();
        if self.offsets.len() as u64 >= across * down {
            return Err(std::io::Error::other("more tiles than the image holds"));
        }
        self.offsets.push(self.pos);
        self.counts.push(encoded.len() as u64);
        self.put(encoded)
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.put(bytes)?;
        self.pos += bytes.len() as u64;
        if !self.big && self.pos > u32::MAX as u64 {
            return Err(std::io::Error::other(
                "the GeoTIFF grew past 4 GB without being a BigTIFF",
            ));
        }
        Ok(())
    }

    /// Writes the image directory after the tiles and puts the file at its name, replacing
    /// what was there.
    pub fn finish(mut self) -> std::io::Result<()> {
        let (across, down) = self.spec.tiles();
        if self.offsets.len() as u64 != across * down {
            return Err(std::io::Error::other(format!(
                "{} of {} tiles written",
                self.offsets.len(),
                across * down
            )));
        }
        if self.pos % 2 == 1 {
            self.put(&[0])?;
        }
        let ifd = self.pos;
        let (entries, overflow) = self.directory(ifd);
        self.put(&entries)?;
        self.put(&overflow)?;
        let file = self.file.finish()?;
        if self.big {
            file.write_all_at(&ifd.to_le_bytes(), 8)?;
        } else {
            file.write_all_at(&(ifd as u32).to_le_bytes(), 4)?;
        }
        crate::replace_file(&self.temp, &self.out)?;
        self.done = true;
        Ok(())
    }

    /// The directory at `at`, and the values that do not fit in its entries (which follow it).
    fn directory(&self, at: u64) -> (Vec<u8>, Vec<u8>) {
        let s = &self.spec;
        let short = |v: u64| (3u16, 1u64, (v as u16).to_le_bytes().to_vec());
        let long = |v: u64| (4u16, 1u64, (v as u32).to_le_bytes().to_vec());
        let offsets = |v: &[u64]| {
            if self.big {
                (
                    16u16,
                    v.len() as u64,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            } else {
                let b: Vec<u8> = v.iter().flat_map(|&x| (x as u32).to_le_bytes()).collect();
                (4u16, v.len() as u64, b)
            }
        };
        let mut tags: Vec<(u16, Field)> = vec![
            (256, long(s.width)),
            (257, long(s.height)),
            (258, short(s.sample.bytes() as u64 * 8)),
            (259, short(s.codec.tiff_code() as u64)),
            // BlackIsZero, one sample, contiguous.
            (262, short(1)),
            (277, short(1)),
            (284, short(1)),
            (322, long(s.tile.0)),
            (323, long(s.tile.1)),
            (324, offsets(&self.offsets)),
            (325, offsets(&self.counts)),
            (339, short(s.sample.format() as u64)),
        ];
        for (tag, values) in &s.geo.tags {
            tags.push((*tag, tag_bytes(values)));
        }
        if let Some(nd) = s.nodata {
            tags.push((GDAL_NODATA, ascii(&nodata_text(nd))));
        }
        tags.sort_by_key(|(t, _)| *t);
        let (count_size, entry_size, inline) = if self.big { (8, 20, 8) } else { (2, 12, 4) };
        let size = count_size + tags.len() as u64 * entry_size + inline;
        let mut entries = Vec::with_capacity(size as usize);
        let mut overflow = Vec::new();
        if self.big {
            entries.extend((tags.len() as u64).to_le_bytes());
        } else {
            entries.extend((tags.len() as u16).to_le_bytes());
        }
        for (tag, (kind, count, bytes)) in tags {
            entries.extend(tag.to_le_bytes());
            entries.extend(kind.to_le_bytes());
            if self.big {
                entries.extend(count.to_le_bytes());
            } else {
                entries.extend((count as u32).to_le_bytes());
            }
            let mut field = vec![0u8; inline as usize];
            if bytes.len() <= inline as usize {
                field[..bytes.len()].copy_from_slice(&bytes);
            } else {
                let offset = at + size + overflow.len() as u64;
                let o = if self.big {
                    offset.to_le_bytes().to_vec()
                } else {
                    (offset as u32).to_le_bytes().to_vec()
                };
                field.copy_from_slice(&o);
                overflow.extend(&bytes);
                if overflow.len() % 2 == 1 {
                    overflow.push(0);
                }
            }
            entries.extend(field);
        }
        // No next directory.
        entries.extend(vec![0u8; inline as usize]);
        (entries, overflow)
    }
}

impl Drop for TiffWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// A tag's type, count of values, and the values' bytes.
type Field = (u16, u64, Vec<u8>);

fn tag_bytes(values: &TagValues) -> Field {
    match values {
        TagValues::Short(v) => (
            3,
            v.len() as u64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        TagValues::Double(v) => (
            12,
            v.len() as u64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        TagValues::Ascii(v) => (2, v.len() as u64, v.clone()),
    }
}

/// An ASCII tag's value: the text and its NUL.
fn ascii(text: &str) -> Field {
    let mut b = text.as_bytes().to_vec();
    b.push(0);
    (2, b.len() as u64, b)
}

/// NoData as GDAL writes it: `nan`, an integer, or the shortest text that reads back the same.
fn nodata_text(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:e}")
    }
}
