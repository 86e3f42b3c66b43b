//! `tessera layer`: a gdalinfo-like summary of a layer, its export to one GeoTIFF or COG, and
//! a PNG preview.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use tessera_core::export::{ExportFormat, export};
use tessera_core::ingest::Progress;
use tessera_core::layer::LayerReader;
use tessera_core::preview::{PreviewOptions, label, preview};

#[derive(Debug, Subcommand)]
pub enum LayerCommand {
    /// A gdalinfo-like summary of a layer.
    Info {
        layer: String,
        /// Print the layer's metadata as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a layer to one GeoTIFF or COG file.
    Export {
        layer: String,
        out: PathBuf,
        /// GTiff or COG.
        #[arg(long, default_value = "GTiff")]
        format: String,
        /// deflate, zstd or none.
        #[arg(long, default_value = "deflate")]
        compress: String,
    },
    /// Draw one band of a layer, or one step of a cube variable, as a PNG: a colour ramp
    /// between its minimum and maximum with a legend, NoData transparent.
    Preview {
        layer: String,
        out: PathBuf,
        /// A raster layer's band (1-based).
        #[arg(long, default_value_t = 1)]
        band: usize,
        /// A cube's variable (default: its first).
        #[arg(long)]
        var: Option<String>,
        /// A cube's step: an instant (the nearest step) or a climatology's group (7, DJF);
        /// default: the last.
        #[arg(long)]
        time: Option<String>,
        /// The image's longest side in pixels (the layer is sampled down to fit).
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
}

pub fn run(command: LayerCommand, progress: &dyn Progress) -> Result<()> {
    match command {
        LayerCommand::Info { layer, json } => info(&layer, json),
        LayerCommand::Export {
            layer,
            out,
            format,
            compress,
        } => {
            let format: ExportFormat = format.parse()?;
            export(&layer, &out, format, compress.parse()?, progress)?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        LayerCommand::Preview {
            layer,
            out,
            band,
            var,
            time,
            size,
        } => {
            let options = PreviewOptions {
                max_side: size,
                band,
                var,
                time,
            };
            let p = preview(&layer, &options)?;
            std::fs::write(&out, &p.png)
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!(
                "wrote {} ({} x {} pixels, 1 per {} cells; {}; {} .. {})",
                out.display(),
                p.width,
                p.height,
                p.stride,
                p.title,
                label(p.min),
                label(p.max)
            );
            Ok(())
        }
    }
}

fn info(url: &str, json: bool) -> Result<()> {
    let reader = LayerReader::open(url)?;
    let info = reader.info();
    if json {
        println!("{}", serde_json_string(info)?);
        return Ok(());
    }
    let md = &info.metadata;
    let grid = md.array_grid();
    let tl = md.layout.tile_layout;
    let cs = md.cell_size();
    println!("Layer: {url}");
    println!(
        "Format: Zarr v2 (zstd), Tessera layer format {}",
        info.format_version
    );
    println!("Size is {}, {}", grid.cols, grid.rows);
    println!("Coordinate System is: {}", md.crs);
    if !md.crs.wkt.is_empty() {
        println!("{}", md.crs.wkt);
    }
    println!(
        "Origin = ({:.15}, {:.15})",
        grid.extent.xmin, grid.extent.ymax
    );
    println!("Pixel Size = ({:.15}, {:.15})", cs.width, -cs.height);
    println!("Extent = {}", md.extent);
    println!("Cell type: {}", md.cell_type);
    println!(
        "Layout: {} x {} tiles of {} x {} cells over {}{}",
        tl.layout_cols,
        tl.layout_rows,
        tl.tile_cols,
        tl.tile_rows,
        md.layout.extent,
        md.zoom.map(|z| format!(" (zoom {z})")).unwrap_or_default()
    );
    println!("Key bounds: {} .. {}", md.bounds.min, md.bounds.max);
    println!("Sources: {}", info.sources.join(", "));
    let expected = md.bounds.to_grid_bounds().size();
    for (i, name) in info.bands.iter().enumerate() {
        let present = reader.tiles_present(i + 1)?.len();
        println!(
            "Band {} ({name}): {present} of {expected} tiles stored (the rest are all NoData)",
            i + 1
        );
    }
    Ok(())
}

fn serde_json_string<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).context("cannot write JSON")
}
