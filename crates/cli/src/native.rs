//! `tessera dem` without GDAL, on a plain local GeoTIFF ([`tessera_tiff`] reads it): the same
//! kernels, halos and output as the engine's embedded path, computed a row of tiles at a time
//! on all cores and written tile by tile into the output GeoTIFF, which carries the input's
//! georeferencing tags as they are.
//!
//! This path only runs what it can finish: anything it does not handle — a URL, another band,
//! `--keep-layer`, `--output-type`, a sidecar file GDAL would read (`.aux.xml`, a world file), a
//! TIFF feature [`tessera_tiff`] leaves to GDAL, or any error, including a damaged file found
//! halfway — makes [`dem`] return `false`, with nothing written, and the engine runs the
//! command from the start: its errors name the problem as they always have.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, sync_channel};

use ndarray::Array2;
use rayon::prelude::*;
use tessera_focal::{Cells32, FocalGrid, FocalOp, MAX_HALO, PreparedFocal};
use tessera_tiff::{Block, Cell, Codec, RawRow, SampleType, Tiff, TiffWriter, WriterSpec};

use crate::args::{DemCommand, DemIo};

/// Output columns computed at once: a window of (tile + 2 × halo) rows by this many columns
/// plus the halo (bounded memory on a raster of any width).
const CHUNK_COLS: u64 = 8192;

/// Runs the command here if it can; `false` when the engine must (nothing was written).
pub fn dem(command: DemCommand, quiet: bool) -> bool {
    let (io, op) = command.split();
    // TESSERA_LOG=debug says which path ran, and why not this one.
    let debug =
        std::env::var("TESSERA_LOG").is_ok_and(|v| v.contains("debug") || v.contains("trace"));
    match run(&io, &op, quiet) {
        Ok(()) => {
            if debug {
                eprintln!("tessera dem: computed without GDAL");
            }
            if !quiet {
                eprintln!("wrote {}", io.output.display());
            }
            true
        }
        Err(why) => {
            if debug {
                eprintln!("tessera dem: handed to tessera-engine: {why}");
            }
            false
        }
    }
}

/// Why this path stepped aside (the engine reports the user's errors).
type Why = String;

fn why(e: impl std::fmt::Display) -> Why {
    e.to_string()
}

fn run(io: &DemIo, op: &FocalOp, quiet: bool) -> Result<(), Why> {
    if io.keep_layer.is_some() || io.output_type.is_some() || io.band != 1 {
        return Err("an option the engine runs".into());
    }
    if io.input.contains("://") {
        return Err("a URL".into());
    }
    if io.tile_size == 0 || !io.tile_size.is_multiple_of(16) || io.max_halo > MAX_HALO {
        return Err("a tile size or halo the engine checks".into());
    }
    let codec = match io.compress.as_str() {
        "none" => Codec::None,
        "deflate" => Codec::Deflate,
        "zstd" => Codec::Zstd,
        _ => return Err("an unknown compression".into()),
    };
    let input = Path::new(&io.input);
    // The engine reports what is wrong with the output.
    if let Some(problem) = io.output_problem() {
        return Err(problem);
    }
    if let Some(sidecar) = sidecar(input) {
        return Err(format!("GDAL would read {}", sidecar.display()));
    }
    let tiff = Tiff::open(input).map_err(why)?;
    let (cell_width, cell_height) = tiff.geo.cell_size().map_err(why)?;
    let geographic = tiff.geo.geographic().ok_or("a CRS GDAL judges")?;
    let grid = FocalGrid {
        cell_width,
        cell_height,
        geographic,
    };
    let focal = op.prepare(&grid, io.max_halo).map_err(why)?;
    let (sample, nodata) = if op.output_is_byte() {
        (SampleType::U8, 0.0)
    } else {
        (SampleType::F32, f64::NAN)
    };
    let tile = io.tile_size as u64;
    let spec = WriterSpec {
        width: tiff.width,
        height: tiff.height,
        sample,
        tile: (tile, tile),
        codec,
        nodata: Some(nodata),
        geo: tiff.geo.clone(),
    };
    let writer = TiffWriter::create(&io.output, spec.clone()).map_err(why)?;
    let bar = (!quiet).then(|| crate::progress::Bar::new("tiles"));
    let (across, down) = spec.tiles();
    if let Some(b) = &bar {
        b.start(across * down);
    }
    let halo = focal.halo() as u64;
    let height = tiff.height;
    let strip = |ty: u64| ty * tile..((ty + 1) * tile).min(height);
    // Rows of tiles in turn, in chunks of columns, each computed on all cores. Meanwhile rayon
    // jobs decode the input blocks the next row of tiles adds and encode the chunks already
    // computed, and a thread appends the encoded tiles to the file in order: it takes each
    // chunk's receiver as the chunk is computed and waits on them one after the other. Only
    // this thread and the appending one ever wait on a channel: a rayon job that blocked could
    // hold up the very job it waits for.
    let spec = std::sync::Arc::new(spec);
    let tiff = std::sync::Arc::new(tiff);
    type Encoded = std::io::Result<Vec<Vec<u8>>>;
    std::thread::scope(|scope| {
        let (chunks, in_order) = sync_channel::<Receiver<Encoded>>(4);
        let appending = scope.spawn(move || {
            let mut writer = writer;
            for chunk in in_order {
                let tiles = chunk
                    .recv()
                    .map_err(|_| std::io::Error::other("a chunk was not encoded"))??;
                for t in tiles {
                    writer.append(&t)?;
                }
            }
            Ok::<_, std::io::Error>(writer)
        });
        let computed = (|| -> Result<(), Why> {
            // A thread reads the input's block rows in order, a row ahead of the decoding
            // (waiting on the disk, it holds up no core), into buffers the decoding hands back.
            let (read, rows_read) = sync_channel::<Result<RawRow, Why>>(0);
            let (recycle, recycled) = std::sync::mpsc::channel::<Vec<u8>>();
            let source = tiff.clone();
            scope.spawn(move || {
                for by in 0..source.blocks().1 {
                    let buf = recycled.try_recv().unwrap_or_default();
                    let row = source.read_row(by, true, buf).map_err(why);
                    let failed = row.is_err();
                    if read.send(row).is_err() || failed {
                        return;
                    }
                }
            });
            // The stored bytes of block rows `rows`, the next ones in order.
            let take = |rows: Vec<u64>| -> Result<Vec<RawRow>, Why> {
                rows.into_iter()
                    .map(|by| match rows_read.recv().map_err(why)?? {
                        raw if raw.by == by => Ok(raw),
                        raw => Err(format!("block row {} was read for {by}", raw.by)),
                    })
                    .collect()
            };
            let mut input = Rows::default();
            let first = take(input.missing(&tiff, &strip(0), halo))?;
            input.insert(decode(&tiff, first, &recycle)?);
            for ty in 0..down {
                let rows = strip(ty);
                input.drop_above(&tiff, &rows, halo);
                let next = match ty + 1 < down {
                    true => take(input.missing(&tiff, &strip(ty + 1), halo))?,
                    false => Vec::new(),
                };
                let (decoded, next_blocks) = sync_channel(1);
                let (source, recycle) = (tiff.clone(), recycle.clone());
                rayon::spawn(move || {
                    let _ = decoded.send(decode(&source, next, &recycle));
                });
                let mut c0 = 0;
                while c0 < tiff.width {
                    let c1 = (c0 + CHUNK_COLS.max(tile) / tile * tile).min(tiff.width);
                    let out = compute(&focal, &tiff, &input, &rows, &(c0..c1))?;
                    let (encoded, receiver) = sync_channel(1);
                    // Closed: the appending thread failed, and says why below.
                    chunks.send(receiver).map_err(why)?;
                    let spec = spec.clone();
                    rayon::spawn(move || {
                        let tiles = (c0 / tile..c1.div_ceil(tile))
                            .into_par_iter()
                            .map(|tx| {
                                let x0 = (tx * tile - c0) as usize;
                                let t = tile as usize;
                                spec.encode(match &out {
                                    Output::F64(out) => tile_cells(out, x0, t, sample, nodata),
                                    Output::F32(out) => tile_cells(out, x0, t, sample, nodata),
                                })
                            })
                            .collect();
                        let _ = encoded.send(tiles);
                    });
                    c0 = c1;
                }
                input.insert(next_blocks.recv().map_err(why)??);
                if let Some(b) = &bar {
                    b.advance(across);
                }
            }
            Ok(())
        })();
        drop(chunks);
        match (computed, appending.join()) {
            (Ok(()), Ok(Ok(writer))) => writer.finish().map_err(why),
            (_, Ok(Err(append))) => Err(why(append)),
            (Err(e), _) => Err(e),
            (Ok(()), Err(_)) => Err("the appending thread panicked".into()),
        }
    })
}

/// A file beside `input` from which GDAL would take georeferencing or NoData: PAM's
/// `.aux.xml`, or a world file.
fn sidecar(input: &Path) -> Option<PathBuf> {
    let mut aux = input.as_os_str().to_owned();
    aux.push(".aux.xml");
    let candidates = [PathBuf::from(aux)].into_iter().chain(
        ["tfw", "TFW", "tifw", "TIFW", "wld", "WLD", "tab", "TAB"]
            .iter()
            .map(|ext| input.with_extension(ext)),
    );
    candidates.into_iter().find(|p| p.exists())
}

/// The input's decoded block rows that the current row of tiles and its halo read.
#[derive(Default)]
struct Rows {
    /// Block row → its blocks, left to right.
    blocks: BTreeMap<u64, Vec<Block>>,
}

impl Rows {
    /// The block rows that cells `rows` and `halo` rows around them fall in.
    fn span(tiff: &Tiff, rows: &std::ops::Range<u64>, halo: u64) -> std::ops::RangeInclusive<u64> {
        let bh = tiff.block.1;
        rows.start.saturating_sub(halo) / bh..=((rows.end + halo).min(tiff.height) - 1) / bh
    }

    /// The block rows that cells `rows` and their halo read and are not decoded yet, in order.
    fn missing(&self, tiff: &Tiff, rows: &std::ops::Range<u64>, halo: u64) -> Vec<u64> {
        Rows::span(tiff, rows, halo)
            .filter(|by| !self.blocks.contains_key(by))
            .collect()
    }

    /// Drops the block rows above those that cells `rows` and their halo read.
    fn drop_above(&mut self, tiff: &Tiff, rows: &std::ops::Range<u64>, halo: u64) {
        let first = *Rows::span(tiff, rows, halo).start();
        self.blocks.retain(|&by, _| by >= first);
    }

    /// Blocks as [`decode`] returns them: by block row, left to right.
    fn insert(&mut self, decoded: Vec<(u64, Block)>) {
        for (by, block) in decoded {
            self.blocks.entry(by).or_default().push(block);
        }
    }
}

/// The blocks of block rows `rows`, decoded on all cores, with their block rows, in order; the
/// rows' buffers are handed back to `recycle`.
fn decode(
    tiff: &Tiff,
    rows: Vec<RawRow>,
    recycle: &std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<Vec<(u64, Block)>, Why> {
    let across = tiff.blocks().0;
    let blocks: Vec<(&RawRow, u64)> = rows
        .iter()
        .flat_map(|r| (0..across).map(move |bx| (r, bx)))
        .collect();
    let decoded = blocks
        .par_iter()
        .map(|&(row, bx)| Ok((row.by, tiff.decode(row, bx).map_err(why)?)))
        .collect();
    for row in rows {
        // Closed: the reading thread is done.
        let _ = recycle.send(row.into_buffer());
    }
    decoded
}

/// A chunk's output: f32 from a kernel that computes in f32 (SVF), else f64.
enum Output {
    F64(Array2<f64>),
    F32(Array2<f32>),
}

/// The operation's output for cells `rows` × `cols`: computed on a window of them and `halo`
/// cells around, NaN outside the raster and on NoData, as the engine's tile tasks read them —
/// in f32 for a kernel that computes in f32, which then reads the window where it is.
fn compute(
    focal: &PreparedFocal,
    tiff: &Tiff,
    input: &Rows,
    rows: &std::ops::Range<u64>,
    cols: &std::ops::Range<u64>,
) -> Result<Output, Why> {
    let h = focal.halo() as u64;
    let dim = (
        (rows.end - rows.start + 2 * h) as usize,
        (cols.end - cols.start + 2 * h) as usize,
    );
    let origin = (rows.start as i64 - h as i64, cols.start as i64 - h as i64);
    if focal.computes_in_f32() {
        let mut window = Cells32::nan(dim.0, dim.1);
        fill(tiff, input, origin, dim.1, window.as_mut_slice());
        Ok(Output::F32(focal.apply_f32(&window)))
    } else {
        let mut window = vec![f64::NAN; dim.0 * dim.1];
        fill(tiff, input, origin, dim.1, &mut window);
        let window = Array2::from_shape_vec(dim, window).map_err(why)?;
        Ok(Output::F64(focal.apply(window.view())))
    }
}

/// The raster's cells into `window`, rows of `width` cells whose first is cell (`y0`, `x0`) of
/// the raster (either may be negative), on all cores; cells outside the raster are left as they
/// are.
fn fill<T: Cell>(tiff: &Tiff, input: &Rows, (y0, x0): (i64, i64), width: usize, window: &mut [T]) {
    if width == 0 {
        return;
    }
    window
        .par_chunks_mut(width)
        .enumerate()
        .for_each(|(i, row)| {
            let y = y0 + i as i64;
            if y >= 0 && (y as u64) < tiff.height {
                fill_row(tiff, input, y as u64, x0, row);
            }
        });
}

/// Raster row `y` from column `x0` (which may be negative) into `out`, cells outside the raster
/// left as they are.
fn fill_row<T: Cell>(tiff: &Tiff, input: &Rows, y: u64, x0: i64, out: &mut [T]) {
    let (bw, bh) = tiff.block;
    let Some(blocks) = input.blocks.get(&(y / bh)) else {
        return;
    };
    let r = (y % bh) as usize;
    let size = tiff.sample.bytes();
    let (lo, hi) = (
        x0.max(0) as u64,
        ((x0 + out.len() as i64).max(0) as u64).min(tiff.width),
    );
    let mut x = lo;
    while x < hi {
        let bx = x / bw;
        let end = ((bx + 1) * bw).min(hi);
        if let Some(block) = blocks.get(bx as usize) {
            let c = (x - bx * bw) as usize;
            let n = (end - x) as usize;
            let start = (r * block.width + c) * size;
            if let (Some(src), Some(dst)) = (
                block.bytes.get(start..start + n * size),
                out.get_mut((x as i64 - x0) as usize..(end as i64 - x0) as usize),
            ) {
                tiff.sample.to_cells(src, tiff.nodata, dst);
            }
        }
        x = end;
    }
}

/// The tile whose first column is column `x0` of `out`, `tile` × `tile` cells in the output's
/// type (little-endian), as the engine converts them: NaN (NoData) becomes `nodata`; floats are
/// rounded to 32 bits, bytes to the nearest integer and clamped. Cells past the raster are
/// `nodata`.
fn tile_cells<T: Cell>(
    out: &Array2<T>,
    x0: usize,
    tile: usize,
    sample: SampleType,
    nodata: f64,
) -> Vec<u8> {
    let cell = |v: f64| if v.is_nan() { nodata } else { v };
    match sample {
        SampleType::U8 => cells_of::<1, T>(out, x0, tile, |v| [cell(v).round() as u8]),
        _ => cells_of::<4, T>(out, x0, tile, |v| (cell(v) as f32).to_le_bytes()),
    }
}

/// [`tile_cells`] for an output type of `N` bytes a cell, `put` giving a cell's bytes.
fn cells_of<const N: usize, T: Cell>(
    out: &Array2<T>,
    x0: usize,
    tile: usize,
    put: impl Fn(f64) -> [u8; N],
) -> Vec<u8> {
    let (rows, cols) = out.dim();
    let mut cells = vec![0u8; tile * tile * N];
    let w = tile.min(cols.saturating_sub(x0));
    let past = put(f64::NAN);
    for (r, row) in cells.chunks_exact_mut(tile * N).enumerate() {
        let (inside, beyond) = row.split_at_mut(if r < rows { w * N } else { 0 });
        if r < rows {
            let src = out.row(r);
            match src.as_slice().and_then(|s| s.get(x0..x0 + w)) {
                Some(src) => inside
                    .chunks_exact_mut(N)
                    .zip(src)
                    .for_each(|(to, &v)| to.copy_from_slice(&put(v.to_f64()))),
                None => inside
                    .chunks_exact_mut(N)
                    .enumerate()
                    .for_each(|(c, to)| to.copy_from_slice(&put(out[[r, x0 + c]].to_f64()))),
            }
        }
        beyond
            .chunks_exact_mut(N)
            .for_each(|to| to.copy_from_slice(&past));
    }
    cells
}
