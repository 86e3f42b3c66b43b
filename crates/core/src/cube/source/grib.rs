//! GRIB sources, message by message through GDAL's raster API (see the module above).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

use gdal::{Dataset, Metadata};
use serde_json::{Map, Value, json};

use crate::cube::{Axis, CubeVariable};
use crate::error::{Error, Result};

use super::*;

pub(super) fn grib_config() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = gdal::config::set_config_option("GRIB_NORMALIZE_UNITS", "NO");
        // Keep the file's longitudes (0..360 for ERA5) as cfgrib does.
        let _ = gdal::config::set_config_option("GRIB_ADJUST_LONGITUDE_RANGE", "NO");
    });
}

/// Whether a path names a GRIB file (by extension).
pub(super) fn is_grib(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    [".grib", ".grb", ".grib2", ".grb2", ".grib1"]
        .iter()
        .any(|e| p.ends_with(e))
}

/// cfgrib's name of an ECMWF parameter as GDAL reports it: `2T` → `t2m`, `10U` → `u10`.
pub(super) fn grib_name(element: &str) -> String {
    let e = element.to_ascii_lowercase();
    let digits: String = e.chars().take_while(|c| c.is_ascii_digit()).collect();
    let rest = &e[digits.len()..];
    match (digits.as_str(), rest.is_empty()) {
        ("", _) | (_, true) => e,
        ("2", false) => format!("{rest}2m"),
        (d, false) => format!("{rest}{d}"),
    }
}

/// A GRIB level from `GRIB_SHORT_NAME` (`500-ISBL`): the coordinate name and value.
pub(super) fn grib_level(short_name: &str) -> (String, Option<f64>) {
    let Some((value, kind)) = short_name.split_once('-') else {
        return (short_name.to_string(), None);
    };
    let value: Option<f64> = value.parse().ok();
    match kind {
        // GRIB 1 gives hPa, GRIB 2 Pa.
        "ISBL" => (
            "isobaricInhPa".into(),
            value.map(|v| if v > 1100.0 { v / 100.0 } else { v }),
        ),
        "HTGL" => ("heightAboveGround".into(), value),
        "SFC" => ("surface".into(), value),
        k => (format!("level_{}", k.to_ascii_lowercase()), value),
    }
}

/// The ensemble member of each message of a GRIB 1 file, from ECMWF's local section (local
/// definitions 1 and 36 — the ensemble and ERA5's EDA — hold the perturbation number at octet
/// 50 of section 1); `None` when a message is not GRIB 1 with such a section. Messages may be
/// padded (ECMWF pads to 120 bytes), so the next one is searched for after each.
pub(super) fn grib1_members(path: &str) -> Option<Vec<i64>> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut members = Vec::new();
    let mut offset = 0u64;
    let mut head = [0u8; 60];
    while offset + 8 <= len {
        f.seek(SeekFrom::Start(offset)).ok()?;
        let n = (len - offset).min(60) as usize;
        f.read_exact(&mut head[..n]).ok()?;
        if &head[..4] != b"GRIB" {
            // Padding after a message: the next one starts at a later "GRIB", if any.
            let mut rest = Vec::new();
            f.seek(SeekFrom::Start(offset)).ok()?;
            f.by_ref().take(4096).read_to_end(&mut rest).ok()?;
            match rest.windows(4).position(|w| w == b"GRIB") {
                Some(p) if p > 0 => {
                    offset += p as u64;
                    continue;
                }
                _ if rest.iter().all(|&b| b == 0) => break,
                _ => return None,
            }
        }
        if head[7] != 1 || n < 58 {
            return None;
        }
        let total = u64::from(head[4]) << 16 | u64::from(head[5]) << 8 | u64::from(head[6]);
        let pds = &head[8..];
        let pds_len = usize::from(pds[0]) << 16 | usize::from(pds[1]) << 8 | usize::from(pds[2]);
        // centre 98 (ECMWF), local definition 1 (ensemble): perturbation number at octet 50.
        if pds[4] != 98 || pds_len < 51 || !matches!(pds[40], 1 | 36) {
            return None;
        }
        members.push(i64::from(pds[49]));
        offset += total.max(8);
    }
    Some(members)
}

/// Walks a GRIB file's messages by their declared lengths and end markers (`7777`): their
/// count, or what is damaged — a message whose length runs past the file or does not end in
/// `7777`, or bytes between messages that are neither padding (zeros) nor a message. GDAL's
/// GRIB driver skips a damaged message and carries on, which would leave a gap in the time
/// axis that nothing reports. With the count, where the last message ends. `None`: a GRIB 1
/// message longer than 8 MB (ECMWF's large-message convention) ends the walk unchecked.
pub(super) fn grib_messages(path: &str) -> GribWalk {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut offset = 0u64;
    let mut count = 0usize;
    let mut last_end = 0u64;
    let mut tail = [0u8; 4];
    while offset < len {
        let n = (len - offset).min(16) as usize;
        // Fresh each time: a short read must not see the last message's header.
        let mut head = [0u8; 16];
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut head[..n])?;
        if n < 8 && head[..n.min(4)] == b"GRIB"[..n.min(4)] {
            return Ok(Err(format!(
                "message {} at offset {offset} is cut short (the file ends inside its header)",
                count + 1
            )));
        }
        if &head[..4] != b"GRIB" {
            // Padding after a message (ECMWF pads to 120 bytes), up to the next one.
            let mut rest = Vec::new();
            f.seek(SeekFrom::Start(offset))?;
            f.by_ref().take(4096).read_to_end(&mut rest)?;
            let next = rest.windows(4).position(|w| w == b"GRIB");
            let gap = next.unwrap_or(rest.len());
            if rest[..gap].iter().any(|&b| b != 0) {
                return Ok(Err(format!(
                    "bytes at offset {offset}, after message {count}, are not a GRIB message (the file is damaged)"
                )));
            }
            match next {
                // Not 0: the bytes at `offset` are not "GRIB" (checked above).
                Some(p) => offset += p.max(1) as u64,
                None if rest.len() < 4096 => break,
                None => offset += rest.len() as u64 - 3,
            }
            continue;
        }
        let total = match head[7] {
            1 => {
                let t = u64::from(head[4]) << 16 | u64::from(head[5]) << 8 | u64::from(head[6]);
                if t & 0x80_0000 != 0 {
                    return Ok(Ok(None));
                }
                t
            }
            2 if n == 16 => u64::from_be_bytes(head[8..16].try_into().unwrap_or_default()),
            edition => {
                return Ok(Err(format!(
                    "message {} at offset {offset} has GRIB edition {edition} (1 and 2 are read; the file is damaged)",
                    count + 1
                )));
            }
        };
        let end = offset
            .checked_add(total)
            .filter(|&e| total >= 12 && e <= len);
        let ends_well = match end {
            Some(end) => {
                f.seek(SeekFrom::Start(end - 4))?;
                f.read_exact(&mut tail)?;
                &tail == b"7777"
            }
            None => false,
        };
        if !ends_well {
            return Ok(Err(format!(
                "message {} at offset {offset} is damaged or cut short (it declares {total} bytes{})",
                count + 1,
                if end.is_some() {
                    " that do not end in 7777"
                } else {
                    ", past the end of the file"
                }
            )));
        }
        count += 1;
        offset += total;
        last_end = offset;
    }
    Ok(Ok(Some((count, last_end))))
}

/// What [`grib_messages`] found.
type GribWalk = std::io::Result<std::result::Result<Option<(usize, u64)>, String>>;

/// Opens a GRIB file with GDAL. Bytes after its last message (ECMWF's padding) are left out of
/// what GDAL sees: its GRIB reader would look for one more message in them and print a
/// warning and an `ERROR:` line to standard output, on every open of a good file.
pub(super) fn open_grib(path: &str) -> gdal::errors::Result<Dataset> {
    open_walked_grib(path, &grib_messages(path))
}

/// [`open_grib`] with the file's messages walked already.
fn open_walked_grib(path: &str, walk: &GribWalk) -> gdal::errors::Result<Dataset> {
    grib_config();
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match walk {
        Ok(Ok(Some((_, end)))) if *end > 0 && *end < len => {
            Dataset::open(format!("/vsisubfile/0_{end},{path}"))
        }
        _ => Dataset::open(path),
    }
}

/// The header of a GRIB file: every message's parameter, level, member and valid time, grouped
/// into variables with their level and member axes (see the module of [`CubeSource`]).
///
/// Just over 150 lines: one pass over the messages and the grouping after it share their
/// tables; apart they would pass five maps between them.
pub(super) fn grib_header(url: &str, path: &str, skip_bad: bool) -> Result<CubeSource> {
    // One walk of the messages serves the open and the check that every one is read.
    let walk = grib_messages(path);
    let ds = open_walked_grib(path, &walk)
        .map_err(|e| Error::source(url, format!("cannot open: {}", gdal_message(&e))))?;
    let (grid, crs) = dataset_grid(url, &ds)?;
    let count = ds.raster_count();
    // Every message is read, or the source is refused (GDAL skips damaged ones quietly) —
    // unless the job said to skip them: then what was left out is noted.
    let damage = match walk {
        Ok(Ok(Some((messages, _)))) if messages > count => Some(format!(
            "has {messages} GRIB messages but only {count} could be read (a damaged message was skipped)"
        )),
        Ok(Ok(_)) => None,
        Ok(Err(damage)) => Some(damage),
        Err(e) => return Err(Error::source(url, format!("cannot read: {e}"))),
    };
    let skipped = match damage {
        Some(damage) if !skip_bad => return Err(Error::source(url, damage)),
        Some(damage) => vec![format!(
            "{damage}; the {count} messages GDAL could read are used"
        )],
        None => Vec::new(),
    };
    let members = if count > 0 { grib1_members(path) } else { None };
    let members = members.filter(|m| m.len() == count);

    struct Msg {
        band: u32,
        time: i64,
        level: Option<f64>,
        member: i64,
    }
    // (element, level kind) → messages, in file order of first appearance.
    type Group = ((String, String), Vec<Msg>, Map<String, Value>);
    let mut groups: Vec<Group> = Vec::new();
    for b in 1..=count {
        let band = ds
            .rasterband(b)
            .map_err(|e| Error::source(url, gdal_message(&e)))?;
        let md = |k: &str| band.metadata_item(k, "");
        let element = md("GRIB_ELEMENT").ok_or_else(|| {
            Error::source(
                url,
                format!("message {b} has no GRIB_ELEMENT: not a GRIB file GDAL understands"),
            )
        })?;
        let time: i64 = md("GRIB_VALID_TIME")
            .and_then(|v| v.split_whitespace().next().and_then(|s| s.parse().ok()))
            .ok_or_else(|| Error::source(url, format!("message {b} has no valid time")))?;
        let (kind, level) = grib_level(&md("GRIB_SHORT_NAME").unwrap_or_default());
        let member = members.as_ref().map_or(0, |m| m[b - 1]);
        let msg = Msg {
            band: b as u32,
            time,
            level,
            member,
        };
        let key = (element.clone(), kind);
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => g.1.push(msg),
            None => {
                let mut attrs = Map::new();
                let comment = md("GRIB_COMMENT").unwrap_or_default();
                let long_name = comment.split(" [").next().unwrap_or("").trim().to_string();
                let units = md("GRIB_UNIT").unwrap_or_default();
                let units = units
                    .trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                if !long_name.is_empty() {
                    attrs.insert("long_name".into(), json!(long_name));
                }
                if !units.is_empty() {
                    attrs.insert("units".into(), json!(units));
                }
                attrs.insert("GRIB_ELEMENT".into(), json!(element));
                groups.push((key, vec![msg], attrs));
            }
        }
    }
    if groups.is_empty() {
        return Err(Error::source(url, "has no GRIB messages"));
    }

    let mut times: Vec<i64> = groups
        .iter()
        .flat_map(|g| g.1.iter().map(|m| m.time))
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for g in &groups {
        *names.entry(grib_name(&g.0.0)).or_default() += 1;
    }
    let mut variables = Vec::new();
    for ((element, kind), msgs, attrs) in groups {
        let mut name = grib_name(&element);
        if names[&name] > 1 {
            name = format!("{name}_{kind}");
        }
        let mut levels: Vec<f64> = msgs.iter().filter_map(|m| m.level).collect();
        levels.sort_by(|a, b| b.total_cmp(a));
        levels.dedup();
        let mut numbers: Vec<i64> = msgs.iter().map(|m| m.member).collect();
        numbers.sort_unstable();
        numbers.dedup();
        let mut axes = Vec::new();
        if numbers.len() > 1 {
            axes.push(Axis {
                name: "number".into(),
                values: numbers.iter().map(|&n| n as f64).collect(),
                attrs: Map::from_iter([(
                    "long_name".into(),
                    json!("ensemble member numerical id"),
                )]),
            });
        }
        let has_levels = levels.len() > 1;
        if has_levels {
            let mut a = Map::new();
            if kind == "isobaricInhPa" {
                a.insert("units".into(), json!("hPa"));
                a.insert("long_name".into(), json!("pressure"));
                a.insert("positive".into(), json!("down"));
            }
            axes.push(Axis {
                name: kind.clone(),
                values: levels.clone(),
                attrs: a,
            });
        }
        let per_time = numbers.len().max(1) * if has_levels { levels.len() } else { 1 };
        let mut bands = vec![0u32; times.len() * per_time];
        for m in &msgs {
            let t = times.binary_search(&m.time).unwrap_or(0);
            let n = if numbers.len() > 1 {
                numbers.binary_search(&m.member).unwrap_or(0)
            } else {
                0
            };
            let l = if has_levels {
                levels.iter().position(|v| Some(*v) == m.level).unwrap_or(0)
            } else {
                0
            };
            let nl = if has_levels { levels.len() } else { 1 };
            let slot = &mut bands[t * per_time + n * nl + l];
            if *slot != 0 {
                return Err(Error::source(
                    url,
                    format!(
                        "variable {name}: messages {} and {} are for the same time, level and member",
                        slot, m.band
                    ),
                ));
            }
            *slot = m.band;
        }
        variables.push(SourceVariable {
            variable: CubeVariable { name, attrs, axes },
            access: Access::Bands { bands },
            time_block: 1,
            stored_bytes: 0,
        });
    }
    Ok(CubeSource {
        url: url.to_string(),
        grid,
        crs,
        times,
        variables,
        skipped,
    })
}
