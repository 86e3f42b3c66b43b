//! `CellType`: the storage type of a cell and its optional NoData value.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The primitive type cells are stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U8,
    I16,
    U16,
    I32,
    F32,
    F64,
}

impl DataType {
    pub const ALL: [DataType; 6] = [
        DataType::U8,
        DataType::I16,
        DataType::U16,
        DataType::I32,
        DataType::F32,
        DataType::F64,
    ];

    pub fn bits(self) -> u32 {
        match self {
            DataType::U8 => 8,
            DataType::I16 | DataType::U16 => 16,
            DataType::I32 | DataType::F32 => 32,
            DataType::F64 => 64,
        }
    }

    pub fn bytes(self) -> usize {
        self.bits() as usize / 8
    }

    pub fn is_float(self) -> bool {
        matches!(self, DataType::F32 | DataType::F64)
    }

    fn is_signed_int(self) -> bool {
        matches!(self, DataType::I16 | DataType::I32)
    }

    /// The name Tessera and its CLI use: `u8`, `i16`, ..., `f64`.
    pub fn name(self) -> &'static str {
        match self {
            DataType::U8 => "u8",
            DataType::I16 => "i16",
            DataType::U16 => "u16",
            DataType::I32 => "i32",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
        }
    }

    /// The narrowest type that holds every value of both (GeoTrellis `union`, made exact:
    /// `u16 ∪ i16 = i32`, `i32 ∪ f32 = f64`).
    pub fn union(self, other: DataType) -> DataType {
        use DataType::*;
        if self == other {
            return self;
        }
        if self.is_float() || other.is_float() {
            let needs_f64 = self == F64 || other == F64 || self == I32 || other == I32;
            return if needs_f64 { F64 } else { F32 };
        }
        let (a, b) = (self, other);
        if a.is_signed_int() == b.is_signed_int() {
            return if a.bits() >= b.bits() { a } else { b };
        }
        // One signed, one unsigned: a signed type wider than the unsigned one.
        let (signed, unsigned) = if a.is_signed_int() { (a, b) } else { (b, a) };
        if signed.bits() > unsigned.bits() {
            signed
        } else {
            I32
        }
    }

    /// Whether every value of the type is exact in an f32 (24-bit significand).
    pub fn exact_in_f32(self) -> bool {
        matches!(
            self,
            DataType::U8 | DataType::I16 | DataType::U16 | DataType::F32
        )
    }

    /// Whether `v` is exactly representable in this type.
    pub fn can_hold(self, v: f64) -> bool {
        match self {
            DataType::U8 => v.fract() == 0.0 && (0.0..=u8::MAX as f64).contains(&v),
            DataType::U16 => v.fract() == 0.0 && (0.0..=u16::MAX as f64).contains(&v),
            DataType::I16 => v.fract() == 0.0 && (i16::MIN as f64..=i16::MAX as f64).contains(&v),
            DataType::I32 => v.fract() == 0.0 && (i32::MIN as f64..=i32::MAX as f64).contains(&v),
            DataType::F32 => v.is_nan() || (v as f32) as f64 == v,
            DataType::F64 => true,
        }
    }

    /// The NoData GeoTrellis gives a type by default (used when types are widened).
    pub fn default_nodata(self) -> f64 {
        match self {
            DataType::U8 | DataType::U16 => 0.0,
            DataType::I16 => i16::MIN as f64,
            DataType::I32 => i32::MIN as f64,
            DataType::F32 | DataType::F64 => f64::NAN,
        }
    }
}

impl std::str::FromStr for DataType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DataType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown cell type `{s}` (expected u8, i16, u16, i32, f32 or f64)"
                ))
            })
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A cell type with its optional NoData value (GeoTrellis `CellType`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CellType {
    pub data_type: DataType,
    /// The NoData value; NaN means "NaN is NoData" for floating types.
    #[serde(with = "nodata_serde")]
    pub nodata: Option<f64>,
}

impl PartialEq for CellType {
    fn eq(&self, other: &Self) -> bool {
        self.data_type == other.data_type
            && match (self.nodata, other.nodata) {
                (None, None) => true,
                (Some(a), Some(b)) => a == b || (a.is_nan() && b.is_nan()),
                _ => false,
            }
    }
}

impl CellType {
    pub fn new(data_type: DataType, nodata: Option<f64>) -> Self {
        CellType { data_type, nodata }
    }

    /// Whether `v` is NoData for this cell type. NaN is never data.
    pub fn is_nodata(&self, v: f64) -> bool {
        v.is_nan() || self.nodata.is_some_and(|nd| nd == v)
    }

    /// The value written where no source has data: NoData if there is one, else NaN for
    /// floating types and 0 for integers.
    pub fn fill_value(&self) -> f64 {
        match self.nodata {
            Some(nd) => nd,
            None if self.data_type.is_float() => f64::NAN,
            None => 0.0,
        }
    }

    /// The widest of two cell types. The NoData of the result is the first NoData that the
    /// wider type can hold; when the type changes and neither can, the type's default.
    pub fn union(&self, other: &CellType) -> CellType {
        let data_type = self.data_type.union(other.data_type);
        let nodata = [self.nodata, other.nodata]
            .into_iter()
            .flatten()
            .find(|nd| data_type.can_hold(*nd))
            .or_else(|| {
                (self.nodata.is_some() || other.nodata.is_some())
                    .then(|| data_type.default_nodata())
            });
        CellType { data_type, nodata }
    }
}

impl std::fmt::Display for CellType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.nodata {
            Some(nd) if nd.abs() >= 1e15 => write!(f, "{} (nodata {nd:e})", self.data_type),
            Some(nd) => write!(f, "{} (nodata {nd})", self.data_type),
            None => write!(f, "{} (no nodata)", self.data_type),
        }
    }
}

/// JSON has no NaN: NoData is written as a number, or the string "NaN".
mod nodata_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(x) if x.is_nan() => s.serialize_some(&Repr::Text("NaN".into())),
            Some(x) => s.serialize_some(&Repr::Number(*x)),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<Repr>::deserialize(d)? {
            None => Ok(None),
            Some(Repr::Number(x)) => Ok(Some(x)),
            Some(Repr::Text(t)) if t.eq_ignore_ascii_case("nan") => Ok(Some(f64::NAN)),
            Some(Repr::Text(t)) => Err(serde::de::Error::custom(format!("bad nodata `{t}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DataType::*;
    use super::*;

    #[test]
    fn union_is_the_narrowest_type_holding_both() {
        assert_eq!(U8.union(I16), I16);
        assert_eq!(U16.union(I16), I32);
        assert_eq!(U8.union(U16), U16);
        assert_eq!(I16.union(F32), F32);
        assert_eq!(I32.union(F32), F64);
        assert_eq!(F32.union(F64), F64);
        for t in DataType::ALL {
            assert_eq!(t.union(t), t);
            for u in DataType::ALL {
                assert_eq!(t.union(u), u.union(t), "{t} ∪ {u} is symmetric");
            }
        }
    }

    #[test]
    fn union_keeps_a_nodata_the_wider_type_can_hold() {
        let a = CellType::new(I16, Some(-32768.0));
        let b = CellType::new(F32, None);
        assert_eq!(a.union(&b), CellType::new(F32, Some(-32768.0)));
        let c = CellType::new(F32, Some(f32::MIN as f64));
        let d = CellType::new(U8, None);
        assert_eq!(d.union(&c), CellType::new(F32, Some(f32::MIN as f64)));
        // u16 with nodata 65535 widened with i16 -> i32 keeps 65535.
        let e = CellType::new(U16, Some(65535.0));
        let f = CellType::new(I16, None);
        assert_eq!(e.union(&f), CellType::new(I32, Some(65535.0)));
        // A nodata the wider type cannot hold falls back to the type default.
        let g = CellType::new(F64, Some(0.1));
        assert_eq!(
            g.union(&CellType::new(F32, None)),
            CellType::new(F64, Some(0.1))
        );
        assert!(!F32.can_hold(0.1));
        assert!(CellType::new(F64, Some(f64::NAN)).is_nodata(f64::NAN));
    }

    #[test]
    fn nodata_round_trips_through_json_including_nan() {
        for ct in [
            CellType::new(F32, Some(f64::NAN)),
            CellType::new(I16, Some(-9999.0)),
            CellType::new(U8, None),
        ] {
            let json = serde_json::to_string(&ct).unwrap();
            let back: CellType = serde_json::from_str(&json).unwrap();
            assert_eq!(back, ct, "{json}");
        }
    }
}
