//! Each product of a cube job's spec, planned: its output variables, grid, chunks and lead
//! coordinates, and the climatologies the map stage accumulates for them — the part of the
//! reduce ([`super::plan`]) that depends on the product operations.

use serde_json::json;

use super::differentiate::Per;
use super::layer::CUBE_FORMAT_VERSION;
use super::plan::{
    ClimJob, CubeSpec, OutKind, OutVar, PlannedProduct, ProductOp, default_lead_chunk,
};
use super::temporal::{Freq, GroupBy, Periods, SEASONS, Stat};
use super::{Chunks, CubeInfo, CubeVariable, Lead};
use crate::error::{Error, Result};
use crate::model::{Crs, GridExtent};

/// Each product of the spec, planned: its output variables, grid, chunks and coordinates;
/// and the climatologies the map stage accumulates for them (and for anomalies).
///
/// Longer than 150 lines: one arm per product operation (ingest, rechunk, resample,
/// climatology, anomaly, gradient), each short and read best beside the others.
pub(super) fn plan_products(
    spec: &CubeSpec,
    root: &str,
    source_urls: &[String],
    (grid, crs): (&GridExtent, &Crs),
    variables: &[CubeVariable],
    times: &[i64],
) -> Result<(Vec<PlannedProduct>, Vec<ClimJob>)> {
    let var_index = |name: &str, product: &str| {
        variables
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "cube.products.{product}: unknown variable {name:?} (the sources have {})",
                    variables
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    };
    let mut products = Vec::new();
    let mut climatologies: Vec<ClimJob> = Vec::new();
    let groups_of = |by: GroupBy| {
        let mut g: Vec<u32> = times.iter().map(|&t| by.key(t)).collect();
        g.sort_unstable();
        g.dedup();
        g
    };
    for (name, p) in &spec.products {
        let cy = p.chunks.y.unwrap_or(256).min(grid.rows as usize);
        let cx = p.chunks.x.unwrap_or(256).min(grid.cols as usize);
        let mut outputs = Vec::new();
        let mut out_vars = Vec::new();
        let plain = |i: usize, v: &CubeVariable| {
            (
                OutVar {
                    input: i,
                    kind: OutKind::Copy,
                },
                v.clone(),
            )
        };
        let lead = match &p.op {
            ProductOp::Ingest => {
                for (i, v) in variables.iter().enumerate() {
                    let (o, v) = plain(i, v);
                    outputs.push(o);
                    out_vars.push(v);
                }
                Lead::Time(times.to_vec())
            }
            ProductOp::Anomaly(a) => {
                for (i, v) in variables.iter().enumerate() {
                    let (mut o, mut v) = plain(i, v);
                    o.kind = OutKind::Anomaly;
                    v.attrs.insert(
                        "cell_methods".into(),
                        json!(format!("time: anomaly from {} mean", a.by.name())),
                    );
                    outputs.push(o);
                    out_vars.push(v);
                }
                if !climatologies
                    .iter()
                    .any(|c| c.by == a.by && c.stat == Stat::Mean && c.for_anomaly)
                {
                    climatologies.push(ClimJob {
                        by: a.by,
                        stat: Stat::Mean,
                        product: None,
                        groups: groups_of(a.by),
                        for_anomaly: true,
                    });
                }
                Lead::Time(times.to_vec())
            }
            ProductOp::Resample(r) => {
                let periods = Periods::new(Freq::parse(&r.freq)?, times[0]);
                let last = periods.index(times[times.len() - 1]);
                for n in r.stats.keys() {
                    var_index(n, name)?;
                }
                for (i, v) in variables.iter().enumerate() {
                    let stats = match (r.stats.get(&v.name), r.stat) {
                        (Some(s), _) => s.to_vec(),
                        (None, Some(s)) => vec![s],
                        (None, None) => continue,
                    };
                    for s in &stats {
                        let mut ov = v.clone();
                        if stats.len() > 1 {
                            ov.name = format!("{}_{}", v.name, s.name());
                        }
                        ov.attrs.insert(
                            "cell_methods".into(),
                            json!(format!("time: {} ({})", stat_method(*s), r.freq)),
                        );
                        if *s == Stat::Count {
                            ov.attrs.remove("units");
                        }
                        outputs.push(OutVar {
                            input: i,
                            kind: OutKind::Stat(*s),
                        });
                        out_vars.push(ov);
                    }
                }
                Lead::Time((0..=last).map(|k| periods.label(k)).collect())
            }
            ProductOp::Climatology(c) => {
                let groups = groups_of(c.by);
                climatologies.push(ClimJob {
                    by: c.by,
                    stat: c.stat,
                    product: Some(products.len()),
                    groups: groups.clone(),
                    for_anomaly: false,
                });
                for (i, v) in variables.iter().enumerate() {
                    let (mut o, mut v) = plain(i, v);
                    o.kind = OutKind::Stat(c.stat);
                    v.attrs.insert(
                        "cell_methods".into(),
                        json!(format!(
                            "time: {} within {}s",
                            stat_method(c.stat),
                            c.by.name()
                        )),
                    );
                    outputs.push(o);
                    out_vars.push(v);
                }
                match c.by {
                    GroupBy::Month => Lead::Month(groups),
                    GroupBy::Dayofyear => Lead::Dayofyear(groups),
                    GroupBy::Season => Lead::Season(
                        groups
                            .iter()
                            .map(|&g| SEASONS[g as usize].to_string())
                            .collect(),
                    ),
                }
            }
            ProductOp::Gradient(g) => {
                let names: Vec<String> = if g.variables.is_empty() {
                    variables.iter().map(|v| v.name.clone()).collect()
                } else {
                    g.variables.clone()
                };
                let unit = match (g.per, crs.is_geographic()) {
                    (Per::Metre, _) => "m".to_string(),
                    (Per::Coordinate, true) => "degree".to_string(),
                    (Per::Coordinate, false) => "coordinate unit".to_string(),
                };
                for n in &names {
                    let i = var_index(n, name)?;
                    let v = &variables[i];
                    let units = v
                        .attrs
                        .get("units")
                        .and_then(|u| u.as_str())
                        .unwrap_or("1")
                        .to_string();
                    for (suffix, kind, what) in [
                        ("dx", OutKind::Dx, "x"),
                        ("dy", OutKind::Dy, "y"),
                        ("gradient", OutKind::Magnitude, "magnitude"),
                    ] {
                        let mut ov = v.clone();
                        ov.name = format!("{}_{suffix}", v.name);
                        ov.attrs
                            .insert("units".into(), json!(format!("{units} {unit}-1")));
                        ov.attrs.insert(
                            "long_name".into(),
                            json!(format!("gradient of {} ({what})", v.name)),
                        );
                        outputs.push(OutVar { input: i, kind });
                        out_vars.push(ov);
                    }
                }
                Lead::Time(times.to_vec())
            }
        };
        let lead_len = lead.len();
        let cl = match (&p.op, p.chunks.time) {
            (ProductOp::Climatology(_), c) => c.unwrap_or(lead_len).min(lead_len),
            (_, Some(c)) => c.min(lead_len),
            (_, None) => default_lead_chunk(lead_len, cy, cx),
        };
        let mut src_urls: Vec<String> = source_urls.to_vec();
        src_urls.truncate(1000);
        let info = CubeInfo {
            format_version: CUBE_FORMAT_VERSION,
            grid: *grid,
            crs: crs.clone(),
            lead,
            variables: out_vars,
            chunks: Chunks {
                lead: cl.max(1),
                y: cy.max(1),
                x: cx.max(1),
            },
            sources: src_urls,
            skipped_inputs: Vec::new(),
            incremental: None,
            complete: false,
        };
        let url = p.url.clone().unwrap_or_else(|| format!("{root}/{name}"));
        products.push(PlannedProduct {
            name: name.clone(),
            url,
            target: None,
            op: p.op.clone(),
            info,
            outputs,
            staged: false,
        });
    }

    Ok((products, climatologies))
}

pub(super) fn stat_method(s: Stat) -> &'static str {
    match s {
        Stat::Mean => "mean",
        Stat::Max => "maximum",
        Stat::Min => "minimum",
        Stat::Sum => "sum",
        Stat::Count => "count",
    }
}
