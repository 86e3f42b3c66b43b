//! Records as an Arrow table (what queries see and what a snapshot stores as Parquet), and back.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, Int64Builder, ListBuilder, MapBuilder, MapFieldNames,
    RecordBatch, StringBuilder, StructBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{
    DataType, Field, Fields, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMillisecondType,
};
use uuid::Uuid;

use super::record::{Dataset, DatasetKind, Description, Dim, Status, Variable};
use crate::error::{Error, Result};

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn floats() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float64, true)))
}

fn variable_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("units", DataType::Utf8, true),
        Field::new("dtype", DataType::Utf8, false),
    ])
}

fn map_of(value: DataType) -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", value, true),
            ])),
            false,
        )),
        false,
    )
}

/// The catalog table's columns: one per field of [`Dataset`], in its order.
pub static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("create_time", timestamp(), false),
        Field::new("update_time", timestamp(), false),
        Field::new("url", DataType::Utf8, false),
        Field::new("job_id", DataType::Utf8, true),
        Field::new("spec_hash", DataType::Utf8, true),
        Field::new("last_run", DataType::Utf8, true),
        Field::new("crs", DataType::Utf8, true),
        Field::new("bbox", floats(), true),
        Field::new("bbox_4326", floats(), true),
        Field::new("time_start", timestamp(), true),
        Field::new("time_end", timestamp(), true),
        Field::new("dims", map_of(DataType::Int64), false),
        Field::new(
            "variables",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(variable_fields()),
                true,
            ))),
            false,
        ),
        Field::new("cell_size", floats(), true),
        Field::new(
            "sources",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new("attributes", map_of(DataType::Utf8), false),
    ]))
});

/// The names of the catalog table's columns.
pub fn column_names() -> Vec<String> {
    SCHEMA.fields().iter().map(|f| f.name().clone()).collect()
}

fn map_names() -> MapFieldNames {
    MapFieldNames {
        entry: "entries".into(),
        key: "keys".into(),
        value: "values".into(),
    }
}

fn push_floats(b: &mut ListBuilder<Float64Builder>, v: Option<&[f64]>) {
    match v {
        Some(v) => {
            b.values().append_slice(v);
            b.append(true);
        }
        None => b.append(false),
    }
}

/// The records as one batch of the catalog table.
pub fn to_batch<'a>(records: impl IntoIterator<Item = &'a Dataset>) -> Result<RecordBatch> {
    let mut id = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut status = StringBuilder::new();
    let mut error = StringBuilder::new();
    let mut create = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut update = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut url = StringBuilder::new();
    let mut job = StringBuilder::new();
    let mut hash = StringBuilder::new();
    let mut last_run = StringBuilder::new();
    let mut crs = StringBuilder::new();
    let mut bbox = ListBuilder::new(Float64Builder::new());
    let mut bbox_4326 = ListBuilder::new(Float64Builder::new());
    let mut t0 = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut t1 = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut dims = MapBuilder::new(Some(map_names()), StringBuilder::new(), Int64Builder::new());
    let mut variables = ListBuilder::new(StructBuilder::from_fields(variable_fields(), 0));
    let mut cell = ListBuilder::new(Float64Builder::new());
    let mut sources = ListBuilder::new(StringBuilder::new());
    let mut attrs = MapBuilder::new(
        Some(map_names()),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let map_err = |e: arrow::error::ArrowError| Error::Internal(format!("catalog table: {e}"));
    for r in records {
        let d = &r.description;
        id.append_value(r.id.to_string());
        name.append_value(&r.name);
        kind.append_value(r.kind.as_str());
        status.append_value(r.status.as_str());
        error.append_option(r.error.as_deref());
        create.append_value(r.create_time);
        update.append_value(r.update_time);
        url.append_value(&r.url);
        job.append_option(r.job_id.as_deref());
        hash.append_option(r.spec_hash.as_deref());
        last_run.append_option(r.last_run.as_deref());
        crs.append_option(d.crs.as_deref());
        push_floats(&mut bbox, d.bbox.as_ref().map(|b| &b[..]));
        push_floats(&mut bbox_4326, d.bbox_4326.as_ref().map(|b| &b[..]));
        t0.append_option(d.time_start);
        t1.append_option(d.time_end);
        for dim in &d.dims {
            dims.keys().append_value(&dim.name);
            dims.values().append_value(dim.size as i64);
        }
        dims.append(true).map_err(map_err)?;
        let s = variables.values();
        for v in &d.variables {
            s.field_builder::<StringBuilder>(0)
                .expect("name is a string field")
                .append_value(&v.name);
            s.field_builder::<StringBuilder>(1)
                .expect("units is a string field")
                .append_option(v.units.as_deref());
            s.field_builder::<StringBuilder>(2)
                .expect("dtype is a string field")
                .append_value(&v.dtype);
            s.append(true);
        }
        variables.append(true);
        push_floats(&mut cell, d.cell_size.as_ref().map(|c| &c[..]));
        for s in &d.sources {
            sources.values().append_value(s);
        }
        sources.append(true);
        for (k, v) in &r.attributes {
            attrs.keys().append_value(k);
            attrs.values().append_value(v);
        }
        attrs.append(true).map_err(map_err)?;
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(status.finish()),
        Arc::new(error.finish()),
        Arc::new(create.finish()),
        Arc::new(update.finish()),
        Arc::new(url.finish()),
        Arc::new(job.finish()),
        Arc::new(hash.finish()),
        Arc::new(last_run.finish()),
        Arc::new(crs.finish()),
        Arc::new(bbox.finish()),
        Arc::new(bbox_4326.finish()),
        Arc::new(t0.finish()),
        Arc::new(t1.finish()),
        Arc::new(dims.finish()),
        Arc::new(variables.finish()),
        Arc::new(cell.finish()),
        Arc::new(sources.finish()),
        Arc::new(attrs.finish()),
    ];
    RecordBatch::try_new(SCHEMA.clone(), columns).map_err(map_err)
}

/// Columns a catalog written by an older Tessera may not have.
const ADDED_LATER: [&str; 1] = ["last_run"];

/// Reads the records of a catalog table batch (a snapshot's) back.
#[derive(Debug)]
pub struct Rows<'a> {
    batch: &'a RecordBatch,
}

fn bad(what: &str) -> Error {
    Error::Internal(format!(
        "catalog snapshot: the column `{what}` has the wrong type"
    ))
}

impl<'a> Rows<'a> {
    /// Checks that the batch has the catalog table's columns.
    pub fn new(batch: &'a RecordBatch) -> Result<Rows<'a>> {
        for f in SCHEMA.fields() {
            // A catalog written before a column was added reads it as empty.
            if ADDED_LATER.contains(&f.name().as_str()) && batch.column_by_name(f.name()).is_none()
            {
                continue;
            }
            let col = batch
                .column_by_name(f.name())
                .ok_or_else(|| bad(f.name()))?;
            if col.data_type() != f.data_type() {
                return Err(bad(f.name()));
            }
        }
        Ok(Rows { batch })
    }

    fn col(&self, name: &str) -> &ArrayRef {
        self.batch
            .column_by_name(name)
            .expect("the columns were checked in Rows::new")
    }

    fn text(&self, name: &str, i: usize) -> Option<String> {
        let a = self.batch.column_by_name(name)?.as_string::<i32>();
        a.is_valid(i).then(|| a.value(i).to_string())
    }

    fn time(&self, name: &str, i: usize) -> Option<i64> {
        let a = self.col(name).as_primitive::<TimestampMillisecondType>();
        a.is_valid(i).then(|| a.value(i))
    }

    fn floats(&self, name: &str, i: usize) -> Option<Vec<f64>> {
        let a = self.col(name).as_list::<i32>();
        a.is_valid(i)
            .then(|| a.value(i).as_primitive::<Float64Type>().values().to_vec())
    }

    /// The id column, for finding rows.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.col("id")
            .as_string::<i32>()
            .iter()
            .map(|v| v.unwrap_or(""))
    }

    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i` as a record.
    pub fn get(&self, i: usize) -> Result<Dataset> {
        let text = |n: &str| self.text(n, i).ok_or_else(|| bad(n));
        let id = Uuid::parse_str(&text("id")?).map_err(|_| bad("id"))?;
        let kind = DatasetKind::parse(&text("kind")?).ok_or_else(|| bad("kind"))?;
        let status = Status::parse(&text("status")?).ok_or_else(|| bad("status"))?;
        let four = |n: &str| self.floats(n, i).and_then(|v| <[f64; 4]>::try_from(v).ok());
        let dims_col = self.col("dims").as_map();
        let entries = dims_col.value(i);
        let (keys, values) = (
            entries.column(0).as_string::<i32>(),
            entries.column(1).as_primitive::<Int64Type>(),
        );
        let dims = (0..entries.len())
            .map(|k| Dim {
                name: keys.value(k).to_string(),
                size: values.value(k).max(0) as u64,
            })
            .collect();
        let vars_col = self.col("variables").as_list::<i32>();
        let vars = vars_col.value(i);
        let vars = vars.as_struct();
        let (vn, vu, vt) = (
            vars.column(0).as_string::<i32>(),
            vars.column(1).as_string::<i32>(),
            vars.column(2).as_string::<i32>(),
        );
        let variables = (0..vars.len())
            .map(|k| Variable {
                name: vn.value(k).to_string(),
                units: vu.is_valid(k).then(|| vu.value(k).to_string()),
                dtype: vt.value(k).to_string(),
            })
            .collect();
        let src_col = self.col("sources").as_list::<i32>();
        let src = src_col.value(i);
        let sources = src
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap_or("").to_string())
            .collect();
        let attr_col = self.col("attributes").as_map();
        let attrs = attr_col.value(i);
        let (ak, av) = (
            attrs.column(0).as_string::<i32>(),
            attrs.column(1).as_string::<i32>(),
        );
        let attributes = (0..attrs.len())
            .map(|k| (ak.value(k).to_string(), av.value(k).to_string()))
            .collect();
        Ok(Dataset {
            id,
            name: text("name")?,
            kind,
            status,
            error: self.text("error", i),
            create_time: self
                .time("create_time", i)
                .ok_or_else(|| bad("create_time"))?,
            update_time: self
                .time("update_time", i)
                .ok_or_else(|| bad("update_time"))?,
            url: text("url")?,
            job_id: self.text("job_id", i),
            spec_hash: self.text("spec_hash", i),
            last_run: self.text("last_run", i),
            description: Description {
                crs: self.text("crs", i),
                bbox: four("bbox"),
                bbox_4326: four("bbox_4326"),
                time_start: self.time("time_start", i),
                time_end: self.time("time_end", i),
                dims,
                variables,
                cell_size: self
                    .floats("cell_size", i)
                    .and_then(|v| <[f64; 2]>::try_from(v).ok()),
                sources,
            },
            attributes,
        })
    }
}

/// A batch as Parquet (Zstd), as a snapshot stores it.
pub fn to_parquet(batch: &RecordBatch) -> Result<bytes::Bytes> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut out = Vec::new();
    let err = |e: parquet::errors::ParquetError| Error::Internal(format!("catalog snapshot: {e}"));
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).map_err(err)?;
    w.write(batch).map_err(err)?;
    w.close().map_err(err)?;
    Ok(bytes::Bytes::from(out))
}

/// A snapshot's Parquet back as one batch with the catalog table's columns.
pub fn from_parquet(url: &str, bytes: bytes::Bytes) -> Result<RecordBatch> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let err = |e: &dyn std::fmt::Display| {
        Error::storage_permanent(url, format!("bad catalog snapshot: {e}"))
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| err(&e))?;
    let schema = builder.schema().clone();
    let reader = builder
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| err(&e))?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| err(&e))?;
    let batch = arrow::compute::concat_batches(&schema, &batches).map_err(|e| err(&e))?;
    Rows::new(&batch)?;
    // The catalog's own schema, so that the snapshot and the newer records concatenate.
    RecordBatch::try_new(SCHEMA.clone(), batch.columns().to_vec()).map_err(|e| err(&e))
}
