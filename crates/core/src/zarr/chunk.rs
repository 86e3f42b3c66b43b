//! The one way Tessera writes a Zarr v2 chunk, for raster layers and cubes alike: the values in
//! C order as little-endian bytes, in one zstd frame (with its content size, no checksum), in
//! one PUT through [`Store`]. A chunk whose every value is the array's fill value is not stored
//! (readers give the fill value for it) and an older one at its key is removed.

use std::borrow::Cow;
use std::cell::RefCell;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::store::{Store, block_on};

/// A plain value type with a fixed little-endian encoding (Zarr's `<u1`, `<i2`, … `<f8`).
pub trait Plain: Copy + Send + Sync + 'static {
    /// Appends the value's little-endian bytes.
    fn push_le(self, out: &mut Vec<u8>);
    /// Whether two values have the same bits (so a NaN fill value matches only that NaN).
    fn same_bits(self, other: Self) -> bool;
}

macro_rules! plain {
    ($($t:ty),*) => {$(
        impl Plain for $t {
            fn push_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn same_bits(self, other: Self) -> bool {
                self.to_le_bytes() == other.to_le_bytes()
            }
        }
    )*};
}
plain!(u8, i16, u16, i32, i64, f32, f64);

/// `values` as little-endian bytes: borrowed where the machine is little-endian.
fn le_bytes<T: Plain>(values: &[T]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: every `Plain` type is a primitive number: its slice is readable as
        // `size_of_val` initialised bytes with no padding, and on a little-endian machine those
        // bytes are the values' little-endian encoding. The borrow keeps `values` alive.
        Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        })
    } else {
        let mut out = Vec::with_capacity(std::mem::size_of_val(values));
        values.iter().for_each(|v| v.push_le(&mut out));
        Cow::Owned(out)
    }
}

thread_local! {
    /// A zstd context at a level, kept between chunks (a fresh one costs page faults).
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
}

/// A chunk's bytes as Tessera stores them: one zstd frame at `level` of the little-endian values.
pub fn encode<T: Plain>(values: &[T], level: i32) -> std::io::Result<Vec<u8>> {
    let bytes = le_bytes(values);
    COMPRESSOR.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match slot {
            Some((_, c)) => c.compress(&bytes),
            None => Err(std::io::ErrorKind::Other.into()),
        }
    })
}

/// Writes one chunk at `key` of `store`, or removes the key when every value is `fill`.
/// `what` names the chunk in an error ("tile (3, 4) of b1").
pub fn put<T: Plain>(
    store: &Store,
    key: &str,
    values: &[T],
    fill: T,
    level: i32,
    what: &str,
) -> Result<()> {
    if values.iter().all(|v| v.same_bits(fill)) {
        return block_on(store.delete(key)).map_err(|e| e.context(format!("cannot remove {what}")));
    }
    let frame = encode(values, level).map_err(|e| {
        Error::storage(
            format!("{}/{key}", store.url()),
            format!("cannot compress {what}: {e}"),
        )
    })?;
    block_on(store.put(key, Bytes::from(frame)))
        .map_err(|e| e.context(format!("cannot write {what}")))
}

/// Reads back one f32 chunk that [`put`] wrote: `None` when it is not stored (it reads as the
/// fill value). `len` is the chunk's number of values.
pub fn get_f32(store: &Store, key: &str, len: usize, what: &str) -> Result<Option<Vec<f32>>> {
    let Some(frame) =
        block_on(store.get(key)).map_err(|e| e.context(format!("cannot read {what}")))?
    else {
        return Ok(None);
    };
    let raw = zstd::bulk::decompress(&frame, len * 4)
        .ok()
        .filter(|raw| raw.len() == len * 4)
        .ok_or_else(|| {
            Error::storage(
                format!("{}/{key}", store.url()),
                format!("{what} is not one zstd frame of {len} f4 values"),
            )
        })?;
    Ok(Some(
        raw.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_fill_chunks_are_removed() {
        let store = Store::open("memory://zarr-chunk-test").unwrap();
        let values = [1.5f32, f32::NAN, -2.0, 0.0];
        put(&store, "v/0.0", &values, f32::NAN, 3, "chunk").unwrap();
        let frame = block_on(store.get("v/0.0")).unwrap().unwrap();
        let raw = zstd::bulk::decompress(&frame, 16).unwrap();
        let back: Vec<f32> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(back[0], 1.5);
        assert!(back[1].is_nan());
        assert_eq!(&back[2..], &[-2.0, 0.0]);

        put(&store, "v/0.0", &[f32::NAN; 4], f32::NAN, 3, "chunk").unwrap();
        assert_eq!(block_on(store.get("v/0.0")).unwrap(), None);
        // A NaN of other bits is a value, as Zarr readers compare fill values by bits.
        let other_nan = f32::from_bits(0xffc0_0000);
        put(&store, "v/0.1", &[other_nan; 4], f32::NAN, 3, "chunk").unwrap();
        assert!(block_on(store.get("v/0.1")).unwrap().is_some());
        put(&store, "i/0", &[0i16, 0], 0, 3, "chunk").unwrap();
        assert_eq!(block_on(store.get("i/0")).unwrap(), None);
    }
}
