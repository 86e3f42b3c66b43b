//! A quick look at a layer without downloading it: one band of a raster layer, or one step of
//! a cube variable, scaled down to fit a box, coloured with a ramp between its minimum and
//! maximum, with a legend under it and NoData transparent — as a PNG (what `tessera layer
//! preview` writes and the coordinator's status page shows).

use std::io::Write as _;

use crate::cube::layer::CubeReader;
use crate::cube::time::{format_instant, parse_instant};
use crate::cube::{CubeInfo, Lead};
use crate::error::{Error, Result};
use crate::layer::{LayerReader, consolidated_metadata};
use crate::model::SpatialKey;
use crate::store::{Store, block_on};

/// What to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewOptions {
    /// The longest side of the image, in pixels (the layer is sampled down to fit).
    pub max_side: usize,
    /// A raster layer's band, 1-based.
    pub band: usize,
    /// A cube's variable (default: its first).
    pub var: Option<String>,
    /// A cube's step: an instant (the nearest step is drawn) or, for a climatology, a group
    /// label (`7`, `DJF`); default: the last step.
    pub time: Option<String>,
}

impl Default for PreviewOptions {
    fn default() -> Self {
        PreviewOptions {
            max_side: 1024,
            band: 1,
            var: None,
            time: None,
        }
    }
}

/// A drawn preview.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub png: Vec<u8>,
    /// The map's size in pixels (the PNG adds the legend's strip below, and may be wider).
    pub width: usize,
    pub height: usize,
    /// Cells of the layer per pixel, along each axis.
    pub stride: usize,
    /// The ramp's ends (NaN when every sampled cell is NoData).
    pub min: f64,
    pub max: f64,
    /// What was drawn: the band, or the variable and step.
    pub title: String,
}

/// Which of Tessera's layer formats a URL holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    Raster,
    Cube,
}

/// The kind of the layer at `url`, from its consolidated metadata.
pub fn layer_kind(url: &str) -> Result<LayerKind> {
    let store = Store::open(url)?;
    let docs = consolidated_metadata(&store, url)?;
    let attrs = docs.get(".zattrs");
    if attrs.and_then(|a| a.get("tessera_cube")).is_some() {
        Ok(LayerKind::Cube)
    } else if attrs.and_then(|a| a.get("tessera")).is_some() {
        Ok(LayerKind::Raster)
    } else {
        Err(Error::layer(
            url,
            "is a Zarr group but neither a Tessera layer nor a cube",
        ))
    }
}

/// The layers a job's output holds: the output itself when it is one, otherwise the layers
/// right under it (a cube job's products), as names relative to `url` (`""` for itself).
pub fn layers_under(url: &str) -> Result<Vec<(String, LayerKind)>> {
    if let Ok(kind) = layer_kind(url) {
        return Ok(vec![(String::new(), kind)]);
    }
    let store = Store::open(url)?;
    let mut out = Vec::new();
    for name in block_on(store.list_dirs(""))? {
        if let Ok(kind) = layer_kind(&format!("{}/{name}", url.trim_end_matches('/'))) {
            out.push((name, kind));
        }
    }
    Ok(out)
}

/// Draws the layer at `url`.
pub fn preview(url: &str, options: &PreviewOptions) -> Result<Preview> {
    if options.max_side == 0 {
        return Err(Error::invalid("a preview needs a size of at least 1 pixel"));
    }
    let (values, width, height, stride, title) = match layer_kind(url)? {
        LayerKind::Raster => {
            if options.var.is_some() || options.time.is_some() {
                return Err(Error::invalid(format!(
                    "{url} is a raster layer: it has bands (--band), not variables or time steps"
                )));
            }
            let (v, w, h, s) = sample_raster(url, options)?;
            (v, w, h, s, format!("band {}", options.band))
        }
        LayerKind::Cube => {
            if options.band != 1 {
                return Err(Error::invalid(format!(
                    "{url} is a cube: it has variables (--var) and steps (--time), not bands"
                )));
            }
            sample_cube(url, options)?
        }
    };
    let (min, max) = values
        .iter()
        .filter(|v| !v.is_nan())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let (min, max) = if min <= max {
        (min, max)
    } else {
        (f64::NAN, f64::NAN)
    };
    let png = draw(&values, width, height, min, max)?;
    Ok(Preview {
        png,
        width,
        height,
        stride,
        min,
        max,
        title,
    })
}

/// The stride that fits `cols × rows` cells in `max_side` pixels, and the sampled size.
fn fit(cols: usize, rows: usize, max_side: usize) -> (usize, usize, usize) {
    let stride = cols.max(rows).div_ceil(max_side).max(1);
    (stride, cols.div_ceil(stride), rows.div_ceil(stride))
}

/// One cell per `stride × stride` block (its top-left) of a raster band, NaN for NoData;
/// only the tiles the layer stores are read.
fn sample_raster(url: &str, options: &PreviewOptions) -> Result<(Vec<f64>, usize, usize, usize)> {
    let reader = LayerReader::open(url)?;
    let md = reader.metadata().clone();
    let grid = md.array_grid();
    let (cols, rows) = (grid.cols as usize, grid.rows as usize);
    let (stride, width, height) = fit(cols, rows, options.max_side);
    let mut values = vec![f64::NAN; width * height];
    let tl = md.layout.tile_layout;
    let (tile_cols, tile_rows) = (tl.tile_cols as usize, tl.tile_rows as usize);
    let keys: Vec<SpatialKey> = reader.tiles_present(options.band)?;
    for key in keys {
        let Some(tile) = reader.read_tile(options.band, key)? else {
            continue;
        };
        let [chunk_row, chunk_col] = md.chunk_of(key);
        let (r0, c0) = (
            chunk_row as usize * tile_rows,
            chunk_col as usize * tile_cols,
        );
        let (r1, c1) = ((r0 + tile_rows).min(rows), (c0 + tile_cols).min(cols));
        // The sampled cells inside this tile: multiples of the stride.
        for y in (r0.div_ceil(stride) * stride..r1).step_by(stride) {
            for x in (c0.div_ceil(stride) * stride..c1).step_by(stride) {
                let v = tile.data.get_f64(y - r0, x - c0).unwrap_or(f64::NAN);
                if !tile.cell_type.is_nodata(v) {
                    values[(y / stride) * width + x / stride] = v;
                }
            }
        }
    }
    Ok((values, width, height, stride))
}

/// The step of a cube's lead that `time` names.
fn pick_step(info: &CubeInfo, time: Option<&str>) -> Result<usize> {
    let n = info.lead.len();
    if n == 0 {
        return Err(Error::invalid("the cube has no steps"));
    }
    let Some(text) = time else { return Ok(n - 1) };
    match &info.lead {
        Lead::Time(times) => {
            let t = parse_instant(text)?;
            let (first, last) = (times[0], times[n - 1]);
            if t < first || t > last {
                return Err(Error::invalid(format!(
                    "time {text} is outside the cube ({} .. {})",
                    format_instant(first),
                    format_instant(last)
                )));
            }
            let i = times.partition_point(|&s| s < t).min(n - 1);
            // The nearest step: this one or the one before.
            Ok(if i > 0 && t - times[i - 1] <= times[i] - t {
                i - 1
            } else {
                i
            })
        }
        lead => {
            let labels = lead_labels(lead);
            labels
                .iter()
                .position(|l| l.eq_ignore_ascii_case(text.trim()))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "the cube is by {} and has no {text:?} (it has {})",
                        lead.name(),
                        labels.join(", ")
                    ))
                })
        }
    }
}

fn lead_labels(lead: &Lead) -> Vec<String> {
    match lead {
        Lead::Time(t) => t.iter().map(|&s| format_instant(s)).collect(),
        Lead::Month(v) | Lead::Dayofyear(v) => v.iter().map(u32::to_string).collect(),
        Lead::Season(v) => v.clone(),
    }
}

/// The most cells read at once from a cube (a strip of rows).
const STRIP_CELLS: usize = 1 << 22;

/// One cell per `stride × stride` block of one step of a cube variable (the first member and
/// level), read in strips of rows.
#[allow(clippy::type_complexity)]
fn sample_cube(
    url: &str,
    options: &PreviewOptions,
) -> Result<(Vec<f64>, usize, usize, usize, String)> {
    let reader = CubeReader::open(url)?;
    let info = reader.info();
    let var = match &options.var {
        Some(v) => info.variable(v)?.1.clone(),
        None => info
            .variables
            .first()
            .cloned()
            .ok_or_else(|| Error::invalid("the cube has no variables"))?,
    };
    let step = pick_step(info, options.time.as_deref())?;
    let (cols, rows) = (info.grid.cols as usize, info.grid.rows as usize);
    let (stride, width, height) = fit(cols, rows, options.max_side);
    let axes = var.axes.len();
    let mut values = vec![f64::NAN; width * height];
    let strip = (STRIP_CELLS / cols.max(1)).max(1);
    let mut y0 = 0;
    while y0 < rows {
        let n = strip.min(rows - y0);
        let mut origin = vec![step as u64];
        origin.extend(std::iter::repeat_n(0, axes));
        origin.extend([y0 as u64, 0]);
        let mut shape = vec![1u64; 1 + axes];
        shape.extend([n as u64, cols as u64]);
        let cells = reader.read_region(&var.name, &origin, &shape)?;
        for y in (y0.div_ceil(stride) * stride..y0 + n).step_by(stride) {
            for x in (0..cols).step_by(stride) {
                let v = cells[(y - y0) * cols + x];
                values[(y / stride) * width + x / stride] = f64::from(v);
            }
        }
        y0 += n;
    }
    let label = lead_labels(&info.lead).swap_remove(step);
    let title = format!("{} at {} {label}", var.name, info.lead.name());
    Ok((values, width, height, stride, title))
}

/// Viridis at nine stops.
const RAMP: [[u8; 3]; 9] = [
    [0x44, 0x01, 0x54],
    [0x47, 0x2d, 0x7b],
    [0x3b, 0x52, 0x8b],
    [0x2c, 0x72, 0x8e],
    [0x21, 0x91, 0x8c],
    [0x28, 0xae, 0x80],
    [0x5e, 0xc9, 0x62],
    [0xad, 0xdc, 0x30],
    [0xfd, 0xe7, 0x25],
];

/// The ramp's colour at `t` in 0..=1.
fn colour(t: f64) -> [u8; 3] {
    let x = t.clamp(0.0, 1.0) * (RAMP.len() - 1) as f64;
    let i = (x.floor() as usize).min(RAMP.len() - 2);
    let f = x - i as f64;
    let (a, b) = (RAMP[i], RAMP[i + 1]);
    std::array::from_fn(|k| {
        (f64::from(a[k]) + (f64::from(b[k]) - f64::from(a[k])) * f).round() as u8
    })
}

/// The legend strip's height, and the narrowest image that holds it.
const LEGEND_HEIGHT: usize = 34;
const LEGEND_WIDTH: usize = 200;

/// An RGBA image.
struct Canvas {
    width: usize,
    height: usize,
    rgba: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: usize, y: usize, c: [u8; 4]) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 4;
            self.rgba[i..i + 4].copy_from_slice(&c);
        }
    }

    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, c: [u8; 4]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    /// `text` in the 3×5 font at `scale`, its top-left at (x, y).
    fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, c: [u8; 4]) {
        for (n, ch) in text.chars().enumerate() {
            let rows = glyph(ch);
            let gx = x + n * 4 * scale;
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        self.fill(gx + col * scale, y + r * scale, scale, scale, c);
                    }
                }
            }
        }
    }
}

/// A 3×5 glyph, one row per entry, the high bit leftmost; unknown characters are blank.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        '-' => [0b000, 0b000, 0b111, 0b000, 0b000],
        '+' => [0b000, 0b010, 0b111, 0b010, 0b000],
        'e' => [0b000, 0b111, 0b111, 0b100, 0b111],
        'n' => [0b000, 0b110, 0b101, 0b101, 0b101],
        'a' => [0b000, 0b011, 0b101, 0b101, 0b011],
        _ => [0; 5],
    }
}

/// A legend label: short, in the glyphs the font has.
pub fn label(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{v:.2e}");
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// The PNG of `values` (`width × height`, NaN transparent) on the ramp from `min` to `max`,
/// with the legend strip below.
fn draw(values: &[f64], width: usize, height: usize, min: f64, max: f64) -> Result<Vec<u8>> {
    let cw = width.max(LEGEND_WIDTH);
    let mut canvas = Canvas {
        width: cw,
        height: height + LEGEND_HEIGHT,
        rgba: vec![0; cw * (height + LEGEND_HEIGHT) * 4],
    };
    let span = max - min;
    for y in 0..height {
        for x in 0..width {
            let v = values[y * width + x];
            if v.is_nan() {
                continue;
            }
            let t = if span > 0.0 { (v - min) / span } else { 0.5 };
            let [r, g, b] = colour(t);
            canvas.set(x, y, [r, g, b, 255]);
        }
    }
    // The legend: a white strip, the ramp as a bar, the ends' values under its ends.
    let white = [255, 255, 255, 255];
    let ink = [0x20, 0x20, 0x20, 255];
    canvas.fill(0, height, cw, LEGEND_HEIGHT, white);
    let (bar_x, bar_w) = (6, cw - 12);
    for x in 0..bar_w {
        let [r, g, b] = colour(x as f64 / (bar_w - 1).max(1) as f64);
        canvas.fill(bar_x + x, height + 4, 1, 12, [r, g, b, 255]);
    }
    let (lo, hi) = (label(min), label(max));
    canvas.text(bar_x, height + 20, &lo, 2, ink);
    let hi_w = hi.chars().count() * 8;
    canvas.text(
        (bar_x + bar_w).saturating_sub(hi_w),
        height + 20,
        &hi,
        2,
        ink,
    );
    encode_png(&canvas)
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(&out[start..]);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// An 8-bit RGBA PNG (no filtering; zlib at the default level).
fn encode_png(canvas: &Canvas) -> Result<Vec<u8>> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&(canvas.width as u32).to_be_bytes());
    header.extend_from_slice(&(canvas.height as u32).to_be_bytes());
    header.extend_from_slice(&[8, 6, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &header);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let row = canvas.width * 4;
    let io = |e: std::io::Error| Error::Internal(format!("cannot compress a PNG: {e}"));
    for y in 0..canvas.height {
        z.write_all(&[0]).map_err(io)?;
        z.write_all(&canvas.rgba[y * row..(y + 1) * row])
            .map_err(io)?;
    }
    let data = z.finish().map_err(io)?;
    png_chunk(&mut out, b"IDAT", &data);
    png_chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stride_fits_the_longest_side() {
        assert_eq!(fit(3000, 2000, 1024), (3, 1000, 667));
        assert_eq!(fit(100, 50, 1024), (1, 100, 50));
        assert_eq!(fit(1025, 1, 1024), (2, 513, 1));
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(label(12.5), "12.5");
        assert_eq!(label(-0.0001), "-1.00e-4");
        assert_eq!(label(3.0), "3");
        assert_eq!(label(1234567.0), "1.23e6");
        assert_eq!(label(-0.0), "0");
    }

    #[test]
    fn the_ramp_runs_from_its_first_to_its_last_stop() {
        assert_eq!(colour(0.0), RAMP[0]);
        assert_eq!(colour(1.0), RAMP[8]);
        assert_eq!(colour(0.5), RAMP[4]);
    }

    #[test]
    fn a_png_has_its_signature_size_and_chunks() {
        let png = draw(&[0.0, 1.0, f64::NAN, 2.0], 2, 2, 0.0, 2.0).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 200);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 2 + 34);
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    }
}
