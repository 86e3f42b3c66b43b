//! # tessera-catalog
//!
//! Queries over the catalog of a store ([`tessera_core::catalog`]): read-only SQL with
//! DataFusion over the `datasets` table and the tables registered in it, searches built from
//! a SQL condition or CQL2 text, a bbox and a time range, and the catalog's STAC export.
//!
//! Only this crate (and what uses it: the CLI and the coordinator) links DataFusion.

/// The Arrow types of query results, for callers that do not depend on DataFusion.
pub mod datafusion_batch {
    pub use datafusion::arrow::array::RecordBatch;
}

pub mod cql2;
pub mod stac;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use tessera_core::catalog::{Catalog, DatasetKind, State, Status, column_names};

/// An error of a query: what the user wrote, said in their terms.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query is wrong: syntax, an unknown column or table, a statement that writes.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Core(#[from] tessera_core::Error),
}

pub type Result<T> = std::result::Result<T, QueryError>;

fn invalid(message: impl Into<String>) -> QueryError {
    QueryError::Invalid(message.into())
}

/// DataFusion's message made readable: without its `Error during planning:` prefixes, and
/// with the catalog's columns named when it is about an unknown one.
fn explain(what: &str, e: DataFusionError) -> QueryError {
    let message = e.to_string();
    let mut text = message.as_str();
    for prefix in [
        "Error during planning: ",
        "SQL error: ",
        "Schema error: ",
        "This feature is not implemented: ",
        "Execution error: ",
        "Arrow error: ",
    ] {
        text = text.trim_start_matches(prefix);
    }
    if text.starts_with("No field named") {
        let column = text
            .trim_start_matches("No field named ")
            .split(['.', ' '])
            .next()
            .unwrap_or("")
            .trim_matches('"');
        let column = column.rsplit('.').next().unwrap_or(column);
        return invalid(format!(
            "{what}: no column `{column}` in the catalog (its columns: {}; a user attribute is attributes['key'])",
            column_names().join(", ")
        ));
    }
    if text.contains("DDL not supported")
        || text.contains("DML not supported")
        || text.contains("Statement not supported")
    {
        return invalid(format!(
            "{what}: the catalog is read-only: only SELECT queries run ({text})"
        ));
    }
    invalid(format!("{what}: {text}"))
}

/// A session over one state of a catalog: the `datasets` table, and the catalog's tables
/// registered by name when a query names them.
pub struct Session {
    ctx: SessionContext,
    state: State,
    catalog: Catalog,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Session(catalog {} at commit {})",
            self.catalog.store().url(),
            self.state.seq()
        )
    }
}

/// A quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

impl Session {
    /// A session over the catalog's newest state.
    pub async fn open(catalog: &Catalog) -> Result<Session> {
        let state = catalog.read().await?;
        Session::over(catalog.clone(), state)
    }

    pub fn over(catalog: Catalog, state: State) -> Result<Session> {
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .with_information_schema(false);
        let ctx = SessionContext::new_with_config(config);
        ctx.register_batch("datasets", state.batch()?)
            .map_err(|e| explain("datasets", e))?;
        Ok(Session {
            ctx,
            state,
            catalog,
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Registers the DONE tables of the catalog a statement names (`FROM "<name>"`).
    async fn register_tables(&self, sql: &str) -> Result<()> {
        let statement = self
            .ctx
            .state()
            .sql_to_statement(sql, &datafusion::config::Dialect::Generic)
            .map_err(|e| explain("sql", e))?;
        use datafusion::sql::parser::Statement as DfStatement;
        use datafusion::sql::sqlparser::ast::Statement;
        let query = matches!(&statement, DfStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_)));
        if !query {
            let first = sql.split_whitespace().next().unwrap_or("").to_uppercase();
            return Err(invalid(format!(
                "sql: the catalog is read-only: only SELECT queries run, not {first}"
            )));
        }
        let references = self
            .ctx
            .state()
            .resolve_table_references(&statement)
            .map_err(|e| explain("sql", e))?;
        for (i, reference) in references.iter().enumerate() {
            let name = reference.table();
            if name == "datasets" && reference.schema().is_none() {
                continue;
            }
            let Some(d) = self
                .state
                .by_name(&reference.to_string())?
                .or(self.state.by_name(name)?)
            else {
                return Err(invalid(format!(
                    "sql: no table `{reference}`: a query reads `datasets` and the catalog's tables by name (`FROM \"<name>\"`), not files"
                )));
            };
            if d.kind != DatasetKind::Table || d.status != Status::Done {
                return Err(invalid(format!(
                    "sql: `{}` is a {} dataset ({}), not a finished table: query it with `tessera read`",
                    d.name,
                    d.kind.as_str(),
                    d.status.as_str()
                )));
            }
            self.register_table(i, reference.clone(), &d.url).await?;
        }
        Ok(())
    }

    /// Registers the table file at `url` as `reference`, read through the store it is in.
    async fn register_table(&self, i: usize, reference: TableReference, url: &str) -> Result<()> {
        let (store, file) = tessera_core::catalog::split_file_url(url)?;
        let base = format!("tessera-table-{i}://store");
        let parsed = url::Url::parse(&base).map_err(|e| invalid(e.to_string()))?;
        self.ctx
            .register_object_store(&parsed, store.object_store());
        let location = format!("{base}/{file}");
        let registered = if file.ends_with(".csv") {
            self.ctx
                .register_csv(reference, &location, CsvReadOptions::new())
                .await
        } else {
            self.ctx
                .register_parquet(reference, &location, ParquetReadOptions::default())
                .await
        };
        registered.map_err(|e| explain(url, e))
    }

    /// Runs one read-only SQL statement: statements that write, DDL, and anything but a
    /// query are refused.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        self.register_tables(sql).await?;
        let df = self
            .ctx
            .sql_with_options(sql, read_only())
            .await
            .map_err(|e| explain("sql", e))?;
        df.collect().await.map_err(|e| explain("sql", e))
    }

    /// Runs a search.
    pub async fn search(&self, search: &Search) -> Result<Vec<RecordBatch>> {
        let sql = search.to_sql()?;
        let df = self
            .ctx
            .sql_with_options(&sql, read_only())
            .await
            .map_err(|e| explain(search.blame(), e))?;
        df.collect().await.map_err(|e| explain(search.blame(), e))
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }
}

/// A search of the catalog: conditions that must all hold, an order and a page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Search {
    /// A SQL condition over the `datasets` columns.
    pub where_sql: Option<String>,
    /// A CQL2 text condition: properties are columns, or else user attributes.
    pub filter_cql2: Option<String>,
    /// west, south, east, north in EPSG:4326: datasets whose bbox intersects it.
    pub bbox: Option<[f64; 4]>,
    /// Datasets whose time range overlaps [start, end] (ms since 1970; `None` is open).
    pub time: Option<(Option<i64>, Option<i64>)>,
    /// A SQL ORDER BY list (`create_time DESC, name`).
    pub order_by: Option<String>,
    pub limit: Option<usize>,
    pub offset: usize,
}

/// Parses `text` with `parse`, refusing anything left after it (so that a condition cannot
/// close the query and start another).
fn parse_whole<T>(
    what: &str,
    text: &str,
    parse: impl FnOnce(
        &mut Parser,
    ) -> std::result::Result<T, datafusion::sql::sqlparser::parser::ParserError>,
) -> Result<T> {
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(text)
        .map_err(|e| invalid(format!("{what}: {e}")))?;
    let parsed = parse(&mut parser).map_err(|e| invalid(format!("{what}: {e}")))?;
    match parser.peek_token().token {
        Token::EOF => Ok(parsed),
        other => Err(invalid(format!(
            "{what}: unexpected `{other}` after the end of the expression"
        ))),
    }
}

impl Search {
    /// Which option a planning error is blamed on.
    fn blame(&self) -> &'static str {
        match (&self.where_sql, &self.filter_cql2) {
            (Some(_), _) => "--where",
            (_, Some(_)) => "--filter",
            _ => "search",
        }
    }

    /// The query as SQL over `datasets`.
    pub fn to_sql(&self) -> Result<String> {
        let mut conditions = Vec::new();
        if let Some(w) = &self.where_sql {
            parse_whole("--where", w, |p| p.parse_expr())?;
            conditions.push(format!("({w})"));
        }
        if let Some(f) = &self.filter_cql2 {
            conditions.push(cql2::to_sql(f)?);
        }
        if let Some([w, s, e, n]) = self.bbox {
            if !(w <= e && s <= n) || [w, s, e, n].iter().any(|v| !v.is_finite()) {
                return Err(invalid(format!(
                    "--bbox {w},{s},{e},{n}: west ≤ east and south ≤ north, finite"
                )));
            }
            conditions.push(bbox_condition([w, s, e, n]));
        }
        if let Some((a, b)) = self.time {
            conditions.push(time_condition(a, b));
        }
        let mut sql = "SELECT * FROM datasets".to_string();
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        match &self.order_by {
            Some(o) => {
                parse_whole("--order-by", o, |p| {
                    p.parse_comma_separated(Parser::parse_order_by_expr)
                })?;
                sql.push_str(&format!(" ORDER BY {o}, id"));
            }
            // A stable order, so that pages follow each other.
            None => sql.push_str(" ORDER BY create_time, id"),
        }
        if let Some(limit) = self.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        if self.offset > 0 {
            sql.push_str(&format!(" OFFSET {}", self.offset));
        }
        Ok(sql)
    }
}

/// Datasets whose EPSG:4326 bbox intersects `[w, s, e, n]`.
pub fn bbox_condition([w, s, e, n]: [f64; 4]) -> String {
    format!(
        "(bbox_4326 IS NOT NULL AND bbox_4326[1] <= {e:?} AND bbox_4326[3] >= {w:?} AND bbox_4326[2] <= {n:?} AND bbox_4326[4] >= {s:?})"
    )
}

/// Datasets whose time range overlaps `[a, b]` (ms; `None` is open).
pub fn time_condition(a: Option<i64>, b: Option<i64>) -> String {
    let mut parts = vec!["time_start IS NOT NULL".to_string()];
    if let Some(b) = b {
        parts.push(format!("arrow_cast(time_start, 'Int64') <= {b}"));
    }
    if let Some(a) = a {
        parts.push(format!(
            "arrow_cast(coalesce(time_end, time_start), 'Int64') >= {a}"
        ));
    }
    format!("({})", parts.join(" AND "))
}

/// `a/b` as ms since 1970: each side an RFC 3339 instant or a date (a date's whole day), or
/// `..` (open).
pub fn parse_time_range(text: &str) -> Result<(Option<i64>, Option<i64>)> {
    let (a, b) = text
        .split_once('/')
        .ok_or_else(|| invalid(format!("--time {text}: START/END (`..` for an open end)")))?;
    let side = |s: &str, end: bool| -> Result<Option<i64>> {
        let s = s.trim();
        if s == ".." || s.is_empty() {
            return Ok(None);
        }
        let (start, stop) = tessera_core::cube::Selection::parse_time(&format!("{s}/{s}"))
            .map_err(|e| invalid(format!("--time {text}: {e}")))?;
        Ok(Some(if end { stop * 1000 + 999 } else { start * 1000 }))
    };
    let (a, b) = (side(a, false)?, side(b, true)?);
    if let (Some(a), Some(b)) = (a, b)
        && a > b
    {
        return Err(invalid(format!(
            "--time {text}: the start is after the end"
        )));
    }
    Ok((a, b))
}

/// `xmin,ymin,xmax,ymax`.
pub fn parse_bbox(text: &str) -> Result<[f64; 4]> {
    let v: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| invalid(format!("--bbox {text}: four numbers west,south,east,north")))?;
    <[f64; 4]>::try_from(v)
        .map_err(|_| invalid(format!("--bbox {text}: four numbers west,south,east,north")))
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

impl std::str::FromStr for Format {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Format> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(invalid(format!("--format {s}: table, json or csv"))),
        }
    }
}

/// The columns `--format table` shows of a search (all of them are in json and csv).
pub const SUMMARY_COLUMNS: [&str; 7] =
    ["id", "name", "kind", "status", "create_time", "crs", "url"];

/// Keeps only `columns` of each batch (those it has).
pub fn project(batches: &[RecordBatch], columns: &[&str]) -> Result<Vec<RecordBatch>> {
    batches
        .iter()
        .map(|b| {
            let idx: Vec<usize> = columns
                .iter()
                .filter_map(|c| b.schema().index_of(c).ok())
                .collect();
            b.project(&idx).map_err(|e| invalid(e.to_string()))
        })
        .collect()
}

/// Results as text in `format`.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    let err = |e: datafusion::arrow::error::ArrowError| invalid(e.to_string());
    match format {
        Format::Table => Ok(
            datafusion::arrow::util::pretty::pretty_format_batches(batches)
                .map_err(err)?
                .to_string()
                + "\n",
        ),
        Format::Json => {
            let mut w = datafusion::arrow::json::ArrayWriter::new(Vec::new());
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs).map_err(err)?;
            w.finish().map_err(err)?;
            let mut out = String::from_utf8(w.into_inner()).map_err(|e| invalid(e.to_string()))?;
            if out.is_empty() {
                out.push_str("[]");
            }
            out.push('\n');
            Ok(out)
        }
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut w = datafusion::arrow::csv::Writer::new(&mut out);
                for b in batches {
                    // CSV has no nested values: lists and maps are written as JSON text.
                    w.write(&flatten_nested(b)?).map_err(err)?;
                }
            }
            String::from_utf8(out).map_err(|e| invalid(e.to_string()))
        }
    }
}

/// A batch with its nested columns (lists, maps, structs) as JSON text.
fn flatten_nested(batch: &RecordBatch) -> Result<RecordBatch> {
    use datafusion::arrow::array::{ArrayRef, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = batch.schema();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, col) in schema.fields().iter().zip(batch.columns()) {
        let nested = matches!(
            f.data_type(),
            DataType::List(_) | DataType::Map(_, _) | DataType::Struct(_)
        );
        if !nested {
            fields.push(f.as_ref().clone());
            columns.push(col.clone());
            continue;
        }
        let one = RecordBatch::try_new(
            Arc::new(Schema::new(vec![f.as_ref().clone()])),
            vec![col.clone()],
        )
        .map_err(|e| invalid(e.to_string()))?;
        let mut w = datafusion::arrow::json::ArrayWriter::new(Vec::new());
        w.write(&one).map_err(|e| invalid(e.to_string()))?;
        w.finish().map_err(|e| invalid(e.to_string()))?;
        let rows: Vec<serde_json::Value> =
            serde_json::from_slice(&w.into_inner()).unwrap_or_default();
        let text: StringArray = (0..batch.num_rows())
            .map(|i| {
                rows.get(i)
                    .and_then(|r| r.get(f.name()))
                    .map(|v| v.to_string())
            })
            .collect();
        fields.push(Field::new(f.name(), DataType::Utf8, true));
        columns.push(Arc::new(text));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| invalid(e.to_string()))
}

/// The records of a state the query results name by id, in the results' order.
pub fn ids_of(batches: &[RecordBatch]) -> Vec<String> {
    use datafusion::arrow::array::{Array, AsArray};
    let mut out = Vec::new();
    for b in batches {
        if let Some(col) = b.column_by_name("id") {
            let ids = col.as_string::<i32>();
            for i in 0..ids.len() {
                out.push(ids.value(i).to_string());
            }
        }
    }
    out
}
