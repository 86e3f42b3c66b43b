//! CQL2 text (the OGC filter language of STAC APIs) as a SQL condition over `datasets`.
//!
//! The `cql2` crate parses; this module writes the SQL. A property is a column of the catalog
//! when it names one, else a user attribute (`source` → `attributes['source']`); an attribute
//! compared with a number is compared as a number. `bbox` and `geometry` are the dataset's
//! EPSG:4326 bbox for `S_INTERSECTS`, and `datetime` its time range for `T_INTERSECTS`.

use cql2::Expr;
use tessera_core::catalog::column_names;

use crate::{QueryError, Result, bbox_condition, quote_ident, quote_literal, time_condition};

fn invalid(message: impl Into<String>) -> QueryError {
    QueryError::Invalid(format!("--filter: {}", message.into()))
}

/// A CQL2 text condition as SQL.
pub fn to_sql(text: &str) -> Result<String> {
    let expr = cql2::parse_text(text).map_err(|e| {
        // pest's message is a drawing over several lines: one line of it is enough.
        let message = e.to_string();
        let expected = message
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("= "))
            .map(|l| l.trim_start_matches("= ").to_string());
        let at = message
            .lines()
            .next()
            .and_then(|l| l.trim().strip_prefix("--> "))
            .map(|p| format!(" at {p}"))
            .unwrap_or_default();
        invalid(format!(
            "not CQL2 text{at}: {}",
            expected.unwrap_or_else(|| message.split_whitespace().collect::<Vec<_>>().join(" "))
        ))
    })?;
    Writer {
        columns: column_names(),
    }
    .write(&expr)
}

struct Writer {
    columns: Vec<String>,
}

/// A property that is a user attribute (not a column).
fn is_attribute(w: &Writer, e: &Expr) -> bool {
    matches!(e, Expr::Property { property } if !w.columns.contains(property))
}

fn operands(op: &str, args: &[Box<Expr>], n: usize) -> Result<()> {
    if args.len() == n {
        Ok(())
    } else {
        Err(invalid(format!(
            "`{op}` takes {n} operands, not {}",
            args.len()
        )))
    }
}

impl Writer {
    fn write(&self, e: &Expr) -> Result<String> {
        match e {
            Expr::Operation { op, args } => self.operation(op, args),
            Expr::Property { property } => Ok(self.property(property)),
            Expr::Float(v) => Ok(number(*v)),
            Expr::Literal(s) => Ok(quote_literal(s)),
            Expr::Bool(b) => Ok(if *b { "TRUE" } else { "FALSE" }.to_string()),
            Expr::Null => Ok("NULL".to_string()),
            Expr::Timestamp { timestamp } => {
                Ok(format!("arrow_cast({}, 'Int64')", self.instant(timestamp)?))
            }
            Expr::Date { date } => Ok(format!("arrow_cast({}, 'Int64')", self.instant(date)?)),
            Expr::Array(items) => Ok(format!(
                "({})",
                items
                    .iter()
                    .map(|i| self.write(i))
                    .collect::<Result<Vec<_>>>()?
                    .join(", ")
            )),
            Expr::Interval { .. } => Err(invalid(
                "an INTERVAL is taken only by T_INTERSECTS(datetime, INTERVAL(...))",
            )),
            Expr::BBox { .. } | Expr::Geometry(_) => Err(invalid(
                "a BBOX or geometry is taken only by S_INTERSECTS(bbox, BBOX(...))",
            )),
        }
    }

    /// An instant as ms since 1970 (a SQL number), from its RFC 3339 or date text.
    fn instant(&self, e: &Expr) -> Result<String> {
        match e {
            Expr::Literal(s) => {
                let ms = crate::parse_time_range(&format!("{s}/{s}"))
                    .map_err(|_| invalid(format!("`{s}` is not an instant")))?
                    .0
                    .ok_or_else(|| invalid(format!("`{s}` is not an instant")))?;
                Ok(format!("to_timestamp_millis({ms})"))
            }
            other => Err(invalid(format!("{other:?} is not an instant"))),
        }
    }

    fn property(&self, name: &str) -> String {
        if self.columns.iter().any(|c| c == name) {
            // Times compare as ms, as instants are written.
            if matches!(
                name,
                "create_time" | "update_time" | "time_start" | "time_end"
            ) {
                return format!("arrow_cast({}, 'Int64')", quote_ident(name));
            }
            quote_ident(name)
        } else {
            format!("attributes[{}]", quote_literal(name))
        }
    }

    /// A comparison's operands, an attribute compared with a number cast to a number.
    fn compared(&self, a: &Expr, b: &Expr) -> Result<(String, String)> {
        let numeric = |x: &Expr| matches!(x, Expr::Float(_));
        let side = |x: &Expr, other: &Expr| -> Result<String> {
            let text = self.write(x)?;
            Ok(if is_attribute(self, x) && numeric(other) {
                format!("TRY_CAST({text} AS DOUBLE)")
            } else {
                text
            })
        };
        Ok((side(a, b)?, side(b, a)?))
    }

    fn operation(&self, op: &str, args: &[Box<Expr>]) -> Result<String> {
        match op {
            "and" | "or" => Ok(format!(
                "({})",
                args.iter()
                    .map(|a| self.write(a))
                    .collect::<Result<Vec<_>>>()?
                    .join(if op == "and" { " AND " } else { " OR " })
            )),
            "not" => {
                operands(op, args, 1)?;
                Ok(format!("(NOT {})", self.write(&args[0])?))
            }
            "=" | "<>" | "<" | ">" | "<=" | ">=" => {
                operands(op, args, 2)?;
                let (a, b) = self.compared(&args[0], &args[1])?;
                Ok(format!("({a} {op} {b})"))
            }
            "+" | "-" | "*" | "/" | "%" => Ok(format!(
                "({})",
                args.iter()
                    .map(|a| self.write(a))
                    .collect::<Result<Vec<_>>>()?
                    .join(&format!(" {op} "))
            )),
            "like" => {
                operands(op, args, 2)?;
                Ok(format!(
                    "({} LIKE {})",
                    self.write(&args[0])?,
                    self.write(&args[1])?
                ))
            }
            "between" => {
                operands(op, args, 3)?;
                let (v, lo) = self.compared(&args[0], &args[1])?;
                let (_, hi) = self.compared(&args[0], &args[2])?;
                Ok(format!("({v} BETWEEN {lo} AND {hi})"))
            }
            "in" => {
                operands(op, args, 2)?;
                let Expr::Array(items) = args[1].as_ref() else {
                    return Err(invalid("IN takes a list"));
                };
                let value = match items.first() {
                    Some(first) => self.compared(&args[0], first)?.0,
                    None => self.write(&args[0])?,
                };
                Ok(format!("({value} IN {})", self.write(&args[1])?))
            }
            "isNull" => {
                operands(op, args, 1)?;
                Ok(format!("({} IS NULL)", self.write(&args[0])?))
            }
            "casei" => {
                operands(op, args, 1)?;
                Ok(format!("lower({})", self.write(&args[0])?))
            }
            "s_intersects" => {
                operands(op, args, 2)?;
                let bbox = args
                    .iter()
                    .find_map(|a| match a.as_ref() {
                        Expr::BBox { bbox } => Some(bbox),
                        _ => None,
                    })
                    .ok_or_else(|| invalid("S_INTERSECTS takes bbox (or geometry) and a BBOX(west, south, east, north)"))?;
                let v: Vec<f64> = bbox
                    .iter()
                    .map(|b| match b.as_ref() {
                        Expr::Float(v) => Ok(*v),
                        _ => Err(invalid("BBOX takes numbers")),
                    })
                    .collect::<Result<_>>()?;
                let b = match v.as_slice() {
                    [w, s, e, n] => [*w, *s, *e, *n],
                    [w, s, _, e, n, _] => [*w, *s, *e, *n],
                    _ => return Err(invalid("BBOX takes 4 (or 6) numbers")),
                };
                Ok(bbox_condition(b))
            }
            "t_intersects" => {
                operands(op, args, 2)?;
                let (a, b) = args
                    .iter()
                    .find_map(|a| match a.as_ref() {
                        Expr::Interval { interval } if interval.len() == 2 => {
                            Some((interval[0].as_ref(), interval[1].as_ref()))
                        }
                        Expr::Timestamp { timestamp } => {
                            Some((timestamp.as_ref(), timestamp.as_ref()))
                        }
                        Expr::Date { date } => Some((date.as_ref(), date.as_ref())),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        invalid("T_INTERSECTS takes datetime and an INTERVAL or TIMESTAMP")
                    })?;
                let ms = |e: &Expr, end: bool| -> Result<Option<i64>> {
                    match e {
                        Expr::Literal(s) if s == ".." => Ok(None),
                        Expr::Literal(s) => {
                            let (x, y) = crate::parse_time_range(&format!("{s}/{s}"))
                                .map_err(|_| invalid(format!("`{s}` is not an instant")))?;
                            Ok(if end { y } else { x })
                        }
                        Expr::Timestamp { timestamp } => match timestamp.as_ref() {
                            Expr::Literal(s) => {
                                let (x, y) = crate::parse_time_range(&format!("{s}/{s}"))
                                    .map_err(|_| invalid(format!("`{s}` is not an instant")))?;
                                Ok(if end { y } else { x })
                            }
                            _ => Err(invalid("TIMESTAMP takes text")),
                        },
                        _ => Err(invalid("an INTERVAL's ends are instants or '..'")),
                    }
                };
                Ok(time_condition(ms(a, false)?, ms(b, true)?))
            }
            other => Err(invalid(format!(
                "the operator `{other}` is not supported here (AND, OR, NOT, comparisons, LIKE, BETWEEN, IN, IS NULL, CASEI, arithmetic, S_INTERSECTS with a BBOX, T_INTERSECTS)"
            ))),
        }
    }
}

/// A number as SQL: integers without a fraction, others as Rust prints them.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::to_sql;

    #[test]
    fn properties_are_columns_or_attributes() {
        let sql = to_sql("accuracy = '1km' AND source IN ('ECMWF','NMC') AND status = 'DONE'")
            .expect("cql2");
        assert_eq!(
            sql,
            "((attributes['accuracy'] = '1km') AND (attributes['source'] IN ('ECMWF', 'NMC')) AND (\"status\" = 'DONE'))"
        );
    }

    #[test]
    fn an_attribute_compared_with_a_number_is_a_number() {
        let sql = to_sql("resolution < 1000").expect("cql2");
        assert_eq!(sql, "(TRY_CAST(attributes['resolution'] AS DOUBLE) < 1000)");
    }

    #[test]
    fn unsupported_operators_and_bad_text_are_named() {
        let e = to_sql("t_before(datetime, TIMESTAMP('2020-01-01T00:00:00Z'))")
            .expect_err("unsupported");
        assert!(e.to_string().contains("t_before"), "{e}");
        let e = to_sql("status = ").expect_err("bad");
        assert!(e.to_string().contains("not CQL2 text"), "{e}");
    }
}
