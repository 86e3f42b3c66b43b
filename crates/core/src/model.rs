//! The raster model, with GeoTrellis's names and rules: extents, cell sizes and types, grids,
//! tile layouts, keys, key indexes, layout schemes and layer metadata.

mod cell_type;
mod extent;
mod grid_extent;
mod key;
mod key_index;
mod layout;
mod layout_scheme;
mod metadata;

pub use cell_type::{CellType, DataType};
pub use extent::{CellSize, Extent};
pub use grid_extent::GridExtent;
pub(crate) use grid_extent::{ceil_snapped, floor_snapped};
pub use key::{GridBounds, KeyBounds, SpatialKey};
pub use key_index::{HilbertIndex, KeyIndex, ZOrderIndex};
pub use layout::{LayoutDefinition, MapKeyTransform, TileLayout};
pub use layout_scheme::{LayoutLevel, LayoutScheme, MAX_TILE_SIZE, ZoomedCrs};
pub use metadata::{Crs, RasterSummary, TileLayerMetadata, collect_metadata};
