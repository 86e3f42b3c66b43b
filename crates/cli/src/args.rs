//! The arguments both binaries parse: the global options, and `tessera dem`'s, which `tessera`
//! runs itself when it can (see `main.rs`) and `tessera-engine` runs otherwise.

use std::path::PathBuf;

use tessera_focal::{
    AspectParams, DEFAULT_MAX_HALO, FocalOp, HillshadeParams, SlopeParams, SlopeUnits, SvfParams,
};

/// The options every command takes.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// Do not draw progress bars.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Log lines as `text` or `json` (one object per line, with the job and task ids as
    /// fields), on stderr; the level comes from TESSERA_LOG (default: warn).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// For an https:// coordinator: the PEM certificate of the CA to trust.
    #[arg(long, global = true)]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum DemCommand {
    /// Sky view factor (0..1): the share of the sky a cell sees past the terrain around it.
    Svf {
        #[command(flatten)]
        io: DemIo,
        /// Azimuths, evenly spaced from north.
        #[arg(long, default_value_t = 16)]
        directions: u32,
        /// Search radius in metres.
        #[arg(long, conflicts_with = "radius_cells")]
        radius: Option<f64>,
        /// Search radius in cells (10 when no radius is given).
        #[arg(long)]
        radius_cells: Option<f64>,
        /// Samples per ray, evenly spaced (default: every whole cell along the ray).
        #[arg(long)]
        steps: Option<u32>,
        /// Metres per map unit; required for a geographic CRS (111120 for degrees).
        #[arg(long, short = 's')]
        scale: Option<f64>,
    },
    /// Slope with Horn's method, in degrees (or percent), as gdaldem slope.
    Slope {
        #[command(flatten)]
        io: DemIo,
        /// Percent rise instead of degrees.
        #[arg(long, short = 'p')]
        percent: bool,
        #[arg(long, short = 's')]
        scale: Option<f64>,
    },
    /// Aspect with Horn's method, degrees clockwise from north, as gdaldem aspect.
    Aspect {
        #[command(flatten)]
        io: DemIo,
        /// Counter-clockwise from east.
        #[arg(long)]
        trigonometric: bool,
        /// 0 for flat cells instead of NoData.
        #[arg(long)]
        zero_for_flat: bool,
    },
    /// Shaded relief (1..255, 0 = NoData) with Horn's method, as gdaldem hillshade.
    Hillshade {
        #[command(flatten)]
        io: DemIo,
        /// Of the light, degrees clockwise from north.
        #[arg(long, default_value_t = 315.0)]
        azimuth: f64,
        /// Of the light, degrees above the horizon.
        #[arg(long, default_value_t = 45.0)]
        altitude: f64,
        /// Vertical exaggeration.
        #[arg(long, short = 'z', default_value_t = 1.0)]
        z_factor: f64,
        #[arg(long, short = 's')]
        scale: Option<f64>,
    },
}

/// What every `tessera dem` command reads and writes.
#[derive(Debug, clap::Args)]
pub struct DemIo {
    /// The DEM or DSM: a path, file:// or s3:// URL.
    pub input: String,
    /// The GeoTIFF to write.
    pub output: PathBuf,
    /// The band of the input.
    #[arg(long, short = 'b', default_value_t = 1)]
    pub band: usize,
    /// Tile size of the job.
    #[arg(long, default_value_t = 256)]
    pub tile_size: u32,
    /// Embedded workers of the job that writes the layer (with --keep-layer; without, the tiles
    /// are computed on all cores in this process and written straight into the GeoTIFF).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// The largest halo, in cells, the operation may need.
    #[arg(long, default_value_t = DEFAULT_MAX_HALO)]
    pub max_halo: usize,
    /// Compression of the GeoTIFF: none (as gdaldem), deflate or zstd.
    #[arg(long, default_value = "none")]
    pub compress: String,
    /// Output cell type (default f32; u8 for hillshade, rounded as gdaldem does).
    #[arg(long)]
    pub output_type: Option<String>,
    /// Also keep the tiled Zarr layer here (a path or URL): the command then runs as a job
    /// (embedded coordinator and workers) writing the layer, and exports it.
    #[arg(long)]
    pub keep_layer: Option<String>,
}

impl DemCommand {
    pub fn split(self) -> (DemIo, FocalOp) {
        match self {
            DemCommand::Svf {
                io,
                directions,
                radius,
                radius_cells,
                steps,
                scale,
            } => (
                io,
                FocalOp::Svf(SvfParams {
                    directions,
                    radius,
                    radius_cells,
                    steps,
                    scale,
                }),
            ),
            DemCommand::Slope { io, percent, scale } => (
                io,
                FocalOp::Slope(SlopeParams {
                    units: if percent {
                        SlopeUnits::Percent
                    } else {
                        SlopeUnits::Degrees
                    },
                    scale,
                }),
            ),
            DemCommand::Aspect {
                io,
                trigonometric,
                zero_for_flat,
            } => (
                io,
                FocalOp::Aspect(AspectParams {
                    trigonometric,
                    zero_for_flat,
                }),
            ),
            DemCommand::Hillshade {
                io,
                azimuth,
                altitude,
                z_factor,
                scale,
            } => (
                io,
                FocalOp::Hillshade(HillshadeParams {
                    azimuth,
                    altitude,
                    z_factor,
                    scale,
                }),
            ),
        }
    }
}

impl DemIo {
    /// The directory the output goes in.
    pub fn output_dir(&self) -> PathBuf {
        match self.output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// What is wrong with the output, if anything: it must be a file, not the input (the output
    /// replaces what is at its path), in a directory that exists.
    pub fn output_problem(&self) -> Option<String> {
        let out = self.output.display();
        if self.output.as_os_str().is_empty() || self.output.is_dir() {
            return Some(format!("{out}: the output must be a file"));
        }
        let input = std::path::Path::new(&self.input);
        if let (Ok(a), Ok(b)) = (input.canonicalize(), self.output.canonicalize())
            && a == b
        {
            return Some(format!("{out}: the output is the input; write elsewhere"));
        }
        let dir = self.output_dir();
        (!dir.is_dir()).then(|| format!("{}: no such directory", dir.display()))
    }
}
