//! Focal operations on layers: the kernels of [`tessera_focal`] (SVF, and slope, aspect and
//! hillshade with Horn's method), with what they need to know of a layer.

pub use tessera_focal::*;

use crate::model::{CellType, DataType, TileLayerMetadata};

/// The grid a focal operation runs on: the layer's cell size, and whether its CRS is in degrees.
pub fn grid_of(metadata: &TileLayerMetadata) -> FocalGrid {
    let cs = metadata.layout.cell_size();
    FocalGrid {
        cell_width: cs.width,
        cell_height: cs.height,
        geographic: metadata.crs.is_geographic(),
    }
}

/// The cell type the operation's output is written as, unless the job says otherwise.
pub fn output_cell_type(op: &FocalOp) -> CellType {
    if op.output_is_byte() {
        CellType::new(DataType::U8, Some(0.0))
    } else {
        CellType::new(DataType::F32, Some(f64::NAN))
    }
}

impl From<tessera_focal::Error> for crate::Error {
    fn from(e: tessera_focal::Error) -> Self {
        crate::Error::invalid(e.message())
    }
}
