//! The zonal table in long form — `(zone id, [attributes], [variable], [time], statistics)` —
//! as Arrow record batches written to Parquet or CSV, one batch per piece of time steps.
//!
//! Types: the id and attributes keep their OGR field types (integer → Int64, real → Float64,
//! else Utf8; the FID is Int64), `time` is a timestamp in milliseconds (UTC, no zone attached, as
//! CF and xarray keep it), counts and sums are Float64 because coverage is fractional, and
//! `variety` and `cell_count` are Int64. Undefined statistics are nulls.
//!
//! The file is written beside its destination (`.<name>.tessera-<pid>`) and renamed into
//! place by [`TableWriter::finish`]; dropped unfinished, it is removed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Float64Builder, Int64Array, ListBuilder, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::stats::{Accumulator, Stat};
use super::zones::{Column, Zones};
use crate::error::{Error, Result};

/// How the table is written, from the output's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Parquet,
    Csv,
    /// CSV on standard output (`-`).
    Stdout,
}

impl TableFormat {
    pub fn of(out: &str) -> Result<TableFormat> {
        let lower = out.to_ascii_lowercase();
        if out == "-" {
            Ok(TableFormat::Stdout)
        } else if lower.ends_with(".parquet") || lower.ends_with(".pq") {
            Ok(TableFormat::Parquet)
        } else if lower.ends_with(".csv") {
            Ok(TableFormat::Csv)
        } else {
            Err(Error::invalid(format!(
                "--out {out}: name a .parquet or .csv file (or - for CSV on standard output)"
            )))
        }
    }
}

enum Sink {
    Parquet(ArrowWriter<File>),
    Csv(arrow::csv::Writer<File>),
    Stdout(arrow::csv::Writer<std::io::Stdout>),
}

/// Writes the table piece by piece.
pub(super) struct TableWriter<'z> {
    zones: &'z Zones,
    stats: Vec<Stat>,
    variables: bool,
    time: bool,
    /// List statistics are Arrow lists (Parquet), else space-separated text (CSV).
    lists: bool,
    schema: SchemaRef,
    sink: Option<Sink>,
    /// (temporary, destination) for a file.
    paths: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for TableWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter")
            .field("paths", &self.paths)
            .finish()
    }
}

fn column_type(c: &Column) -> DataType {
    match c {
        Column::Int(_) => DataType::Int64,
        Column::Real(_) => DataType::Float64,
        Column::Text(_) => DataType::Utf8,
    }
}

/// The values of `column` for `zones` (indices), in order.
fn take(column: &Column, zones: impl Iterator<Item = usize>) -> ArrayRef {
    match column {
        Column::Int(v) => Arc::new(zones.map(|z| v[z]).collect::<Int64Array>()),
        Column::Real(v) => Arc::new(zones.map(|z| v[z]).collect::<Float64Array>()),
        Column::Text(v) => Arc::new(zones.map(|z| v[z].clone()).collect::<StringArray>()),
    }
}

impl<'z> TableWriter<'z> {
    pub(super) fn create(
        out: &str,
        format: TableFormat,
        zones: &'z Zones,
        stats: &[Stat],
        variables: bool,
        time: bool,
    ) -> Result<TableWriter<'z>> {
        let mut fields = vec![Field::new(&zones.id_name, column_type(&zones.ids), true)];
        for (name, column) in &zones.fields {
            if *name == zones.id_name {
                continue;
            }
            fields.push(Field::new(name, column_type(column), true));
        }
        if variables {
            fields.push(Field::new("variable", DataType::Utf8, false));
        }
        if time {
            fields.push(Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ));
        }
        for s in stats {
            let ty = if s.is_list() && format != TableFormat::Parquet {
                // CSV has no lists: the values, space-separated.
                DataType::Utf8
            } else if s.is_list() {
                DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
            } else if s.is_integer() {
                DataType::Int64
            } else {
                DataType::Float64
            };
            fields.push(Field::new(s.name(), ty, true));
        }
        let mut names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::invalid(format!(
                "the table would have two columns named {:?} (rename the id or attribute field)",
                w[0]
            )));
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let (sink, paths) = match format {
            TableFormat::Stdout => (
                Sink::Stdout(
                    arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(std::io::stdout()),
                ),
                None,
            ),
            _ => {
                let dest = PathBuf::from(out);
                let tmp = temporary_beside(&dest)?;
                let file = File::create(&tmp)
                    .map_err(|e| Error::invalid(format!("cannot write {}: {e}", tmp.display())))?;
                let sink = if format == TableFormat::Parquet {
                    let props = WriterProperties::builder()
                        .set_compression(Compression::SNAPPY)
                        .build();
                    Sink::Parquet(
                        ArrowWriter::try_new(file, schema.clone(), Some(props))
                            .map_err(|e| Error::Internal(format!("parquet writer: {e}")))?,
                    )
                } else {
                    Sink::Csv(
                        arrow::csv::WriterBuilder::new()
                            .with_header(true)
                            .build(file),
                    )
                };
                (sink, Some((tmp, dest)))
            }
        };
        Ok(TableWriter {
            zones,
            stats: stats.to_vec(),
            variables,
            time,
            lists: format == TableFormat::Parquet,
            schema,
            sink: Some(sink),
            paths,
        })
    }

    /// Writes the rows of a run of time steps of `variable` (`times`, one per step): every zone
    /// for each step. `accs[z][s]` is zone z at step s of the run.
    pub(super) fn write_piece(
        &mut self,
        variable: &str,
        times: &[Option<i64>],
        accs: &[Vec<Accumulator>],
        cell_area: f64,
    ) -> Result<usize> {
        let n_zones = self.zones.len();
        let n_steps = times.len();
        let rows = n_steps * n_zones;
        let zone_of = || (0..n_steps).flat_map(move |_| 0..n_zones);
        let mut columns: Vec<ArrayRef> = vec![take(&self.zones.ids, zone_of())];
        for (name, column) in &self.zones.fields {
            if *name != self.zones.id_name {
                columns.push(take(column, zone_of()));
            }
        }
        if self.variables {
            columns.push(Arc::new(StringArray::from(vec![variable; rows])));
        }
        if self.time {
            // Milliseconds: Parquet has no timestamp in seconds.
            let times: TimestampMillisecondArray = times
                .iter()
                .flat_map(|t| std::iter::repeat_n(t.map(|t| t * 1000), n_zones))
                .collect();
            columns.push(Arc::new(times));
        }
        for &stat in &self.stats {
            if stat.is_list() {
                let lists = (0..n_steps)
                    .flat_map(|s| (0..n_zones).map(move |z| (s, z)))
                    .map(|(s, z)| accs[z][s].list(stat));
                let array: ArrayRef = if self.lists {
                    let mut b = ListBuilder::new(Float64Builder::new());
                    for l in lists {
                        b.values().append_slice(&l);
                        b.append(true);
                    }
                    Arc::new(b.finish())
                } else {
                    let text = lists.map(|l| {
                        Some(
                            l.iter()
                                .map(|v| v.to_string())
                                .collect::<Vec<_>>()
                                .join(" "),
                        )
                    });
                    Arc::new(text.collect::<StringArray>())
                };
                columns.push(array);
                continue;
            }
            let values = (0..n_steps)
                .flat_map(|s| (0..n_zones).map(move |z| (s, z)))
                .map(|(s, z)| accs[z][s].value(stat, cell_area));
            let array: ArrayRef = if stat.is_integer() {
                Arc::new(values.map(|v| v.map(|v| v as i64)).collect::<Int64Array>())
            } else {
                Arc::new(values.collect::<Float64Array>())
            };
            columns.push(array);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::Internal(format!("zonal table: {e}")))?;
        let failed = |e: &dyn std::fmt::Display| {
            Error::invalid(format!("cannot write the zonal table: {e}"))
        };
        match self.sink.as_mut() {
            Some(Sink::Parquet(w)) => w.write(&batch).map_err(|e| failed(&e))?,
            Some(Sink::Csv(w)) => w.write(&batch).map_err(|e| failed(&e))?,
            Some(Sink::Stdout(w)) => w.write(&batch).map_err(|e| failed(&e))?,
            None => return Err(Error::Internal("the table is already finished".into())),
        }
        Ok(rows)
    }

    /// Closes the file and moves it into place.
    pub(super) fn finish(mut self) -> Result<()> {
        let failed = |e: &dyn std::fmt::Display| {
            Error::invalid(format!("cannot write the zonal table: {e}"))
        };
        match self.sink.take() {
            Some(Sink::Parquet(w)) => {
                w.close().map_err(|e| failed(&e))?;
            }
            Some(Sink::Csv(w)) => {
                w.into_inner().flush().map_err(|e| failed(&e))?;
            }
            Some(Sink::Stdout(w)) => {
                w.into_inner().flush().map_err(|e| failed(&e))?;
            }
            None => {}
        }
        if let Some((tmp, dest)) = self.paths.take() {
            crate::store::replace_file(&tmp, &dest).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Error::invalid(format!("cannot move the table to {}: {e}", dest.display()))
            })?;
        }
        Ok(())
    }
}

impl Drop for TableWriter<'_> {
    fn drop(&mut self) {
        if let Some((tmp, _)) = self.paths.take() {
            drop(self.sink.take());
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// `.<name>.<tag>` in `dest`'s directory (`.` when it names none): where a table's
/// temporary file and a zonal job's scratch partials go.
pub(crate) fn hidden_beside(dest: &Path, tag: &str) -> PathBuf {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "table".into());
    dir.join(format!(".{name}.{tag}"))
}

/// `.<name>.tessera-<pid>` in the destination's directory, which must exist.
fn temporary_beside(dest: &Path) -> Result<PathBuf> {
    let tmp = hidden_beside(dest, &format!("tessera-{}", std::process::id()));
    match tmp.parent() {
        Some(dir) if !dir.is_dir() => Err(Error::invalid(format!(
            "--out {}: the directory {} does not exist",
            dest.display(),
            dir.display()
        ))),
        _ => Ok(tmp),
    }
}
