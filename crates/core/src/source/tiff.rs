//! The first image file directory of a little-endian TIFF or BigTIFF, read directly (by
//! `tessera_tiff`'s [`Directory`]): where a GeoTIFF's blocks are (to read them ahead,
//! [`BlockIndex`]) and where its tile arrays are (to fill them in, `export`'s frame copy). GDAL
//! reports a block's offset too, but one metadata lookup at a time, at about 0.1 ms each: 9 s for
//! the 87,000 of a city DSM.

use std::fs::File;

use tessera_tiff::Directory;
pub(crate) use tessera_tiff::Field;

fn bad(e: tessera_tiff::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

const TILE_OFFSETS: u16 = 324;
const TILE_BYTE_COUNTS: u16 = 325;
const STRIP_OFFSETS: u16 = 273;
const STRIP_BYTE_COUNTS: u16 = 279;
const PLANAR_CONFIG: u16 = 284;

/// A tiled TIFF's TileOffsets and TileByteCounts fields.
pub(crate) fn tile_arrays(file: &File) -> std::io::Result<(Field, Field)> {
    let dir = Directory::first(file).map_err(bad)?;
    match (dir.field(TILE_OFFSETS), dir.field(TILE_BYTE_COUNTS)) {
        (Some(o), Some(c)) => Ok((o, c)),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no TileOffsets or TileByteCounts: not a tiled TIFF",
        )),
    }
}

/// Where each block of a GeoTIFF is, by GDAL's block numbering (blocks are the TIFF's tiles, or
/// its strips).
#[derive(Debug)]
pub struct BlockIndex {
    offsets: Vec<u64>,
    counts: Vec<u64>,
    /// Blocks across one row.
    across: u64,
    /// Blocks of one band when bands are stored apart (PlanarConfiguration 2), else 0.
    per_band: u64,
}

impl BlockIndex {
    /// The block index of the TIFF `file` whose blocks are `block_size` cells of a raster of
    /// `cols` × `rows`; `None` when it is not a TIFF this reads.
    pub fn read(
        file: &File,
        (cols, rows): (u64, u64),
        block_size: (usize, usize),
    ) -> Option<BlockIndex> {
        let dir = Directory::first(file).ok()?;
        let find = |tag| dir.field(tag);
        let (offsets, counts) = match (find(TILE_OFFSETS), find(TILE_BYTE_COUNTS)) {
            (Some(o), Some(c)) => (o, c),
            _ => (find(STRIP_OFFSETS)?, find(STRIP_BYTE_COUNTS)?),
        };
        let (bw, bh) = (block_size.0.max(1) as u64, block_size.1.max(1) as u64);
        let across = cols.div_ceil(bw);
        let blocks = across * rows.div_ceil(bh);
        let separate = match find(PLANAR_CONFIG) {
            Some(f) => dir.ints(file, &f).ok()?.first() == Some(&2),
            None => false,
        };
        let (offsets, counts) = (
            dir.ints(file, &offsets).ok()?,
            dir.ints(file, &counts).ok()?,
        );
        if offsets.len() != counts.len() || (offsets.len() as u64) < blocks {
            return None;
        }
        Some(BlockIndex {
            offsets,
            counts,
            across,
            per_band: if separate { blocks } else { 0 },
        })
    }

    /// The offset and length of block (`bx`, `by`) of `band` (1-based); `None` when the file
    /// does not store it.
    pub fn block(&self, band: usize, bx: u64, by: u64) -> Option<(u64, u64)> {
        let i = (band.max(1) as u64 - 1) * self.per_band + by * self.across + bx;
        let (&offset, &len) = (self.offsets.get(i as usize)?, self.counts.get(i as usize)?);
        (offset > 0 && len > 0).then_some((offset, len))
    }
}

#[cfg(test)]
mod tests {
    use gdal::Metadata;
    use gdal::cpl::CslStringList;

    use super::*;
    use crate::synth::write_test_dsm;

    /// Every block of every band, where GDAL says it is and where the index says it is.
    fn agree(path: &std::path::Path) {
        let ds = gdal::Dataset::open(path).unwrap();
        let (cols, rows) = ds.raster_size();
        let block = ds.rasterband(1).unwrap().block_size();
        let file = File::open(path).unwrap();
        let index = BlockIndex::read(&file, (cols as u64, rows as u64), block).unwrap();
        for band in 1..=ds.raster_count() {
            let b = ds.rasterband(band).unwrap();
            for by in 0..rows.div_ceil(block.1) as u64 {
                for bx in 0..cols.div_ceil(block.0) as u64 {
                    let item = |what: &str| {
                        b.metadata_item(&format!("BLOCK_{what}_{bx}_{by}"), "TIFF")
                            .map(|v| v.parse::<u64>().unwrap())
                    };
                    let gdal = item("OFFSET").zip(item("SIZE")).filter(|&(o, _)| o > 0);
                    assert_eq!(
                        index.block(band, bx, by),
                        gdal,
                        "{path:?} band {band} block {bx},{by}"
                    );
                }
            }
        }
    }

    #[test]
    fn block_offsets_are_where_gdal_says_for_tiles_strips_and_bands_apart() {
        let dir = tempfile::tempdir().unwrap();
        let tiled = dir.path().join("tiled.tif");
        write_test_dsm(&tiled, 700, 530);
        agree(&tiled);
        let src = gdal::Dataset::open(&tiled).unwrap();
        let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
        let striped = dir.path().join("striped.tif");
        src.create_copy(&driver, &striped, &CslStringList::new())
            .unwrap();
        agree(&striped);
        // Two bands stored apart, BigTIFF.
        let mut opts = CslStringList::new();
        for (k, v) in [("TILED", "YES"), ("INTERLEAVE", "BAND"), ("BIGTIFF", "YES")] {
            opts.set_name_value(k, v).unwrap();
        }
        let apart = dir.path().join("apart.tif");
        let ds = driver
            .create_with_band_type_with_options::<f32, _>(&apart, 300, 200, 2, &opts)
            .unwrap();
        for b in 1..=2 {
            let values = vec![b as f32; 300 * 200];
            ds.rasterband(b)
                .unwrap()
                .write(
                    (0, 0),
                    (300, 200),
                    &mut gdal::raster::Buffer::new((300, 200), values),
                )
                .unwrap();
        }
        drop(ds);
        agree(&apart);
        // Not a TIFF.
        std::fs::write(dir.path().join("x.txt"), b"hello, world").unwrap();
        let text = File::open(dir.path().join("x.txt")).unwrap();
        assert!(BlockIndex::read(&text, (1, 1), (1, 1)).is_none());
    }
}
