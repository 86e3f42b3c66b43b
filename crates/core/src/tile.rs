//! Tiles: ndarray-backed cells of every cell type, NoData-aware; cutting with resampling and
//! merging of overlapping cuts.

mod cut;
mod merge;

use ndarray::Array2;

use crate::model::{CellType, DataType};

pub use cut::{PointTransform, Resample, SourceWindow, cut_into};
pub use merge::{MergeMethod, Merger};

/// A cell value type Tessera stores.
pub trait Cell: Copy + Send + Sync + PartialEq + std::fmt::Debug + 'static {
    const DATA_TYPE: DataType;
    fn to_f64(self) -> f64;
    /// Converts with GDAL's rules: rounded to nearest and clamped for integers; NaN becomes 0.
    fn from_f64(v: f64) -> Self;
}

macro_rules! int_cell {
    ($t:ty, $dt:ident) => {
        impl Cell for $t {
            const DATA_TYPE: DataType = DataType::$dt;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                // `as` saturates and maps NaN to 0.
                v.round() as $t
            }
        }
    };
}
int_cell!(u8, U8);
int_cell!(i16, I16);
int_cell!(u16, U16);
int_cell!(i32, I32);

impl Cell for f32 {
    const DATA_TYPE: DataType = DataType::F32;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Cell for f64 {
    const DATA_TYPE: DataType = DataType::F64;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// The cells of a tile, in their own type. Rows run south, columns east.
#[derive(Debug, Clone, PartialEq)]
pub enum TileData {
    U8(Array2<u8>),
    I16(Array2<i16>),
    U16(Array2<u16>),
    I32(Array2<i32>),
    F32(Array2<f32>),
    F64(Array2<f64>),
}

/// Runs `$body` with `$a` bound to the typed array inside a `TileData`.
#[macro_export]
#[doc(hidden)]
macro_rules! with_tile_data {
    ($data:expr, $a:ident => $body:expr) => {
        match $data {
            $crate::tile::TileData::U8($a) => $body,
            $crate::tile::TileData::I16($a) => $body,
            $crate::tile::TileData::U16($a) => $body,
            $crate::tile::TileData::I32($a) => $body,
            $crate::tile::TileData::F32($a) => $body,
            $crate::tile::TileData::F64($a) => $body,
        }
    };
}

impl TileData {
    /// `rows` × `cols` cells of `data_type`, all `value`.
    pub fn filled(data_type: DataType, rows: usize, cols: usize, value: f64) -> TileData {
        fn fill<T: Cell>(rows: usize, cols: usize, v: f64) -> Array2<T> {
            Array2::from_elem((rows, cols), T::from_f64(v))
        }
        match data_type {
            DataType::U8 => TileData::U8(fill(rows, cols, value)),
            DataType::I16 => TileData::I16(fill(rows, cols, value)),
            DataType::U16 => TileData::U16(fill(rows, cols, value)),
            DataType::I32 => TileData::I32(fill(rows, cols, value)),
            DataType::F32 => TileData::F32(fill(rows, cols, value)),
            DataType::F64 => TileData::F64(fill(rows, cols, value)),
        }
    }

    /// Converts `values` to `data_type` with [`Cell::from_f64`].
    pub fn from_f64(data_type: DataType, values: &Array2<f64>) -> TileData {
        Self::from_f64_mapped(data_type, values, |x| x)
    }

    /// Converts `values` to `data_type` as [`Self::from_f64`] does, with NaN cells written as
    /// `fill` (a tile's NoData): the two in one pass.
    pub fn from_f64_filled(data_type: DataType, values: &Array2<f64>, fill: f64) -> TileData {
        Self::from_f64_mapped(data_type, values, |x| if x.is_nan() { fill } else { x })
    }

    /// `f` of each value, converted to `data_type` with [`Cell::from_f64`].
    fn from_f64_mapped(
        data_type: DataType,
        values: &Array2<f64>,
        f: impl Fn(f64) -> f64 + Copy,
    ) -> TileData {
        fn conv<T: Cell>(v: &Array2<f64>, f: impl Fn(f64) -> f64) -> Array2<T> {
            v.mapv(|x| T::from_f64(f(x)))
        }
        match data_type {
            DataType::U8 => TileData::U8(conv(values, f)),
            DataType::I16 => TileData::I16(conv(values, f)),
            DataType::U16 => TileData::U16(conv(values, f)),
            DataType::I32 => TileData::I32(conv(values, f)),
            DataType::F32 => TileData::F32(conv(values, f)),
            DataType::F64 => TileData::F64(conv(values, f)),
        }
    }

    pub fn data_type(&self) -> DataType {
        match self {
            TileData::U8(_) => DataType::U8,
            TileData::I16(_) => DataType::I16,
            TileData::U16(_) => DataType::U16,
            TileData::I32(_) => DataType::I32,
            TileData::F32(_) => DataType::F32,
            TileData::F64(_) => DataType::F64,
        }
    }

    /// (rows, cols).
    pub fn shape(&self) -> (usize, usize) {
        with_tile_data!(self, a => a.dim())
    }

    pub fn to_f64(&self) -> Array2<f64> {
        with_tile_data!(self, a => a.mapv(Cell::to_f64))
    }

    pub fn get_f64(&self, row: usize, col: usize) -> Option<f64> {
        with_tile_data!(self, a => a.get((row, col)).map(|v| v.to_f64()))
    }

    /// Converts to another cell type (exact when the target holds every value).
    pub fn convert(&self, data_type: DataType) -> TileData {
        if data_type == self.data_type() {
            return self.clone();
        }
        TileData::from_f64(data_type, &self.to_f64())
    }
}

/// A tile: its cells and their cell type (which says what NoData is).
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    pub data: TileData,
    pub cell_type: CellType,
}

impl Tile {
    /// A tile with every cell at the cell type's fill value (NoData where there is one).
    pub fn empty(cell_type: CellType, rows: usize, cols: usize) -> Tile {
        Tile {
            data: TileData::filled(cell_type.data_type, rows, cols, cell_type.fill_value()),
            cell_type,
        }
    }

    pub fn shape(&self) -> (usize, usize) {
        self.data.shape()
    }

    /// Whether every cell is NoData (or NaN).
    pub fn is_all_nodata(&self) -> bool {
        let ct = self.cell_type;
        with_tile_data!(&self.data, a => a.iter().all(|v| ct.is_nodata(v.to_f64())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_rounds_and_clamps_like_gdal() {
        assert_eq!(u8::from_f64(254.5), 255);
        assert_eq!(u8::from_f64(300.0), 255);
        assert_eq!(u8::from_f64(-3.0), 0);
        assert_eq!(i16::from_f64(-2.5), -3);
        assert_eq!(i32::from_f64(f64::NAN), 0);
        let t = TileData::from_f64(DataType::I16, &ndarray::array![[1.4, -40000.0], [2.6, 7.0]]);
        assert_eq!(t, TileData::I16(ndarray::array![[1, -32768], [3, 7]]));
        assert_eq!(
            t.convert(DataType::F64).to_f64(),
            ndarray::array![[1.0, -32768.0], [3.0, 7.0]]
        );
    }

    #[test]
    fn empty_tiles_hold_nodata() {
        let t = Tile::empty(CellType::new(DataType::I16, Some(-9999.0)), 2, 3);
        assert_eq!(t.shape(), (2, 3));
        assert_eq!(t.data.get_f64(1, 2), Some(-9999.0));
        assert!(t.is_all_nodata());
        let f = Tile::empty(CellType::new(DataType::F32, None), 1, 1);
        assert!(f.data.get_f64(0, 0).is_some_and(f64::is_nan));
    }
}
