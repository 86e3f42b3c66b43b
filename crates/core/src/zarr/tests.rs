//! The streaming reader against arrays written here.

use super::array::*;
use super::codec::*;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use crate::error::Result;

/// Writes a Zarr v2 array of `shape` in `chunks` whose element at index i is `value(i)`
/// (flat C-order index), stored as `dtype`; chunks in `skip` are left out.
fn write_array(
    dir: &Path,
    shape: &[usize],
    chunks: &[usize],
    dtype: &str,
    zstd: bool,
    skip: &[Vec<usize>],
    value: impl Fn(usize) -> f64,
) {
    std::fs::create_dir_all(dir).unwrap();
    let compressor = if zstd {
        r#"{"id": "zstd", "level": 1}"#
    } else {
        "null"
    };
    let meta = format!(
        r#"{{"zarr_format": 2, "shape": {shape:?}, "chunks": {chunks:?}, "dtype": "{dtype}",
            "order": "C", "filters": null, "fill_value": -9, "compressor": {compressor}}}"#
    );
    std::fs::write(dir.join(".zarray"), meta).unwrap();
    let grid: Vec<Range<usize>> = shape
        .iter()
        .zip(chunks)
        .map(|(&n, &c)| 0..n.div_ceil(c))
        .collect();
    for index in box_indices(&grid) {
        if skip.contains(&index) {
            continue;
        }
        let boxed: Vec<Range<usize>> = chunks.iter().map(|&c| 0..c).collect();
        let mut bytes = Vec::new();
        for local in box_indices(&boxed) {
            let global: Vec<usize> = local
                .iter()
                .zip(&index)
                .zip(chunks)
                .map(|((l, i), c)| i * c + l)
                .collect();
            let inside = global.iter().zip(shape).all(|(g, n)| g < n);
            let flat = global.iter().zip(shape).fold(0, |a, (g, n)| a * n + g);
            let v = if inside { value(flat) } else { -9.0 };
            match dtype {
                "<f4" => bytes.extend((v as f32).to_le_bytes()),
                "<i2" => bytes.extend((v as i16).to_le_bytes()),
                _ => unreachable!(),
            }
        }
        if zstd {
            bytes = zstd::bulk::compress(&bytes, 1).unwrap();
        }
        let key: Vec<String> = index.iter().map(|i| i.to_string()).collect();
        std::fs::write(dir.join(key.join(".")), bytes).unwrap();
    }
}

/// What `read` must give, from `value` directly.
fn expected(
    shape: &[usize],
    times: Range<usize>,
    rows: Range<usize>,
    flip_y: bool,
    value: impl Fn(usize) -> f64,
) -> Vec<f32> {
    let n = shape.len();
    let planes: usize = shape[1..n - 2].iter().product();
    let (h, w) = (rows.len(), shape[n - 1]);
    let mut out = Vec::new();
    for t in times {
        for p in 0..planes {
            for r in 0..h {
                let y = if flip_y {
                    rows.end - 1 - r
                } else {
                    rows.start + r
                };
                for x in 0..w {
                    out.push(value(((t * planes + p) * shape[n - 2] + y) * w + x) as f32);
                }
            }
        }
    }
    out
}

#[test]
fn streams_equal_the_array_in_any_chunking() {
    let tmp = tempfile::tempdir().unwrap();
    let shape = [7, 2, 9, 11];
    let value = |i: usize| (i as f64) * 0.5 - 3.0;
    let cases: [(&str, [usize; 4], bool); 4] = [
        ("a", [3, 1, 4, 5], true),
        ("b", [7, 2, 9, 11], true),
        ("c", [2, 2, 9, 4], false),
        ("d", [4, 1, 2, 11], true),
    ];
    for (name, chunks, zstd) in cases {
        let dir = tmp.path().join(name);
        write_array(&dir, &shape, &chunks, "<f4", zstd, &[], value);
        let a = ZarrArray::open(tmp.path(), name).unwrap();
        let id = Convert {
            scale: 1.0,
            offset: 0.0,
            nodata: None,
        };
        for (times, rows, flip) in [
            (0..7, 0..9, false),
            (1..6, 2..7, false),
            (2..3, 3..9, true),
            (0..7, 0..9, true),
        ] {
            let mut out = vec![0f32; times.len() * 2 * rows.len() * 11];
            a.read(times.clone(), rows.clone(), flip, id, &mut out)
                .unwrap();
            let want = expected(&shape, times.clone(), rows.clone(), flip, value);
            assert_eq!(out, want, "{name} {times:?} {rows:?} flip {flip}");
        }
        // Consecutive pieces continue the open streams and give the same values.
        let mut whole = Vec::new();
        for piece in [0..2, 2..3, 3..7] {
            let mut out = vec![0f32; piece.len() * 2 * 9 * 11];
            a.read(piece, 0..9, false, id, &mut out).unwrap();
            whole.extend(out);
        }
        assert_eq!(
            whole,
            expected(&shape, 0..7, 0..9, false, value),
            "{name} pieces"
        );
    }
}

#[test]
fn whole_chunks_decode_in_place_reporting_final_steps() {
    let tmp = tempfile::tempdir().unwrap();
    // Chunks of 400 steps × 60 × 60 (5.8 MB, so more than one report each) in 900 steps:
    // two full chunks and an edge chunk of 100 steps; chunk 1 is missing.
    let shape = [900, 60, 60];
    // Noise, so that the input arrives in several blocks and the decoding in several calls.
    let value = |i: usize| ((i * 2_654_435_761) % 1_000_003) as f64 / 7.0;
    write_array(
        &tmp.path().join("v"),
        &shape,
        &[400, 60, 60],
        "<f4",
        true,
        &[vec![1, 0, 0]],
        value,
    );
    let a = ZarrArray::open(tmp.path(), "v").unwrap();
    let id = Convert {
        scale: 1.0,
        offset: 0.0,
        nodata: None,
    };
    let scaled = Convert { scale: 2.0, ..id };
    assert_eq!(a.whole_steps(&id, false), Some(400));
    assert_eq!(a.whole_steps(&id, true), None);
    assert_eq!(a.whole_steps(&scaled, false), None);
    // Segments of a zstd window and a step (the floor is lifted for the test, and level 1
    // has 512 KB windows): a chunk of 5.8 MB goes round the ring of 2.3 MB twice, and the
    // next chunk starts where it ended.
    let mut ring = StepRing::with_floor(3600, 0);
    // The views given out are kept until the ring asks for their segment back; each must
    // still read what it read when given (the ring writes into no segment a view holds).
    let mut decode = |tc: usize, stop_after: usize| -> Result<(Vec<usize>, Vec<f32>)> {
        let mut reports = Vec::new();
        let mut got = Vec::new();
        let held: std::cell::RefCell<Vec<(ChunkView, Vec<f32>)>> = Default::default();
        let intact = |held: &[(ChunkView, Vec<f32>)]| {
            assert!(held.iter().all(|(v, seen)| v.values() == seen.as_slice()));
        };
        a.decode_chunk(
            tc,
            &mut ring,
            |segment| {
                intact(&held.borrow());
                held.borrow_mut()
                    .retain(|(v, _)| !v._segments.iter().any(|s| Arc::ptr_eq(s, segment)));
                Arc::strong_count(segment) == 1
            },
            |steps, view| {
                assert_eq!(
                    steps.start,
                    reports.last().copied().unwrap_or(0),
                    "in order"
                );
                assert_eq!(view.values().len(), steps.len() * 3600);
                reports.push(steps.end);
                got.extend_from_slice(view.values());
                let seen = view.values().to_vec();
                held.borrow_mut().push((view, seen));
                reports.len() < stop_after
            },
        )?;
        intact(&held.borrow());
        Ok((reports, got))
    };
    for tc in 0..3 {
        let (reports, got) = decode(tc, usize::MAX).unwrap();
        let steps = 400.min(900 - tc * 400);
        assert_eq!(reports.last(), Some(&400));
        if tc == 1 {
            assert!(
                got.iter().all(|&v| v == -9.0),
                "a missing chunk is the fill"
            );
        } else {
            // A full chunk of noise goes through several segments.
            assert!(tc == 2 || reports.len() >= 3, "{reports:?}");
            let want = expected(&shape, tc * 400..tc * 400 + steps, 0..60, false, value);
            assert_eq!(&got[..steps * 3600], want.as_slice(), "chunk {tc}");
        }
    }
    // Stopping early leaves a context and a ring that the next chunk reuses cleanly.
    let (reports, _) = decode(0, 1).unwrap();
    assert_eq!(reports.len(), 1);
    let (_, got) = decode(2, usize::MAX).unwrap();
    let want = expected(&shape, 800..900, 0..60, false, value);
    assert_eq!(&got[..100 * 3600], want.as_slice());
    // A truncated chunk is an error naming it.
    let chunk = tmp.path().join("v").join("0.0.0");
    let bytes = std::fs::read(&chunk).unwrap();
    std::fs::write(&chunk, &bytes[..bytes.len() / 2]).unwrap();
    let e = decode(0, usize::MAX).unwrap_err().to_string();
    assert!(e.contains("0.0.0") && e.contains("truncated"), "{e}");
}

#[test]
fn integers_are_scaled_and_fill_and_missing_chunks_are_nan() {
    let tmp = tempfile::tempdir().unwrap();
    let shape = [4, 1, 6, 5];
    let value = |i: usize| {
        if i.is_multiple_of(7) {
            -9.0
        } else {
            (i % 50) as f64
        }
    };
    write_array(
        &tmp.path().join("v"),
        &shape,
        &[2, 1, 3, 5],
        "<i2",
        true,
        &[vec![1, 0, 1, 0]],
        value,
    );
    let a = ZarrArray::open(tmp.path(), "v").unwrap();
    let convert = Convert {
        scale: 0.5,
        offset: 100.0,
        nodata: Some(-9.0),
    };
    let mut out = vec![0f32; 4 * 6 * 5];
    a.read(0..4, 0..6, false, convert, &mut out).unwrap();
    for t in 0..4 {
        for y in 0..6 {
            for x in 0..5 {
                let i = (t * 6 + y) * 5 + x;
                let missing = t >= 2 && y >= 3;
                let v = value(i);
                let want = if missing || v == -9.0 {
                    f32::NAN
                } else {
                    (v * 0.5 + 100.0) as f32
                };
                assert!(
                    out[i] == want || (out[i].is_nan() && want.is_nan()),
                    "{t} {y} {x}"
                );
            }
        }
    }
}

#[test]
fn a_truncated_chunk_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    write_array(
        &tmp.path().join("v"),
        &[4, 1, 3, 3],
        &[4, 1, 3, 3],
        "<f4",
        true,
        &[],
        |i| i as f64,
    );
    let chunk = tmp.path().join("v").join("0.0.0.0");
    let bytes = std::fs::read(&chunk).unwrap();
    std::fs::write(&chunk, &bytes[..bytes.len() / 2]).unwrap();
    let a = ZarrArray::open(tmp.path(), "v").unwrap();
    let id = Convert {
        scale: 1.0,
        offset: 0.0,
        nodata: None,
    };
    let mut out = vec![0f32; 4 * 9];
    let e = a
        .read(0..4, 0..3, false, id, &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("0.0.0.0") && e.contains("cannot decode"), "{e}");
}

#[test]
fn unsupported_arrays_are_left_to_gdal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    std::fs::create_dir_all(&dir).unwrap();
    for meta in [
        r#"{"zarr_format": 2, "shape": [2,3,3], "chunks": [2,3,3], "dtype": "<f4", "order": "F", "filters": null, "fill_value": null, "compressor": null}"#,
        r#"{"zarr_format": 2, "shape": [2,3,3], "chunks": [2,3,3], "dtype": "<f4", "order": "C", "filters": null, "fill_value": null, "compressor": {"id": "blosc"}}"#,
        r#"{"zarr_format": 2, "shape": [2,3,3], "chunks": [2,3,3], "dtype": ">f4", "order": "C", "filters": null, "fill_value": null, "compressor": null}"#,
        r#"{"zarr_format": 2, "shape": [2,3,3], "chunks": [2,3,3], "dtype": "<f4", "order": "C", "filters": [{"id": "delta"}], "fill_value": null, "compressor": null}"#,
    ] {
        std::fs::write(dir.join(".zarray"), meta).unwrap();
        assert!(ZarrArray::open(tmp.path(), "v").is_none(), "{meta}");
    }
}
