//! Band expressions: `(b2 - b1) / (b2 + b1)`, with `+ - * /`, unary minus, parentheses,
//! numbers, bands `b1`, `b2`, ... and the functions `min`, `max`, `abs`, `sqrt`, `pow`.
//! Parsed once, evaluated over whole arrays.

use ndarray::{Array2, Zip};
use serde::{Deserialize, Serialize};

use super::{BandRef, clean, parse_band};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Num(f64),
    Band(usize),
    Neg(Box<Node>),
    Bin(char, Box<Node>, Box<Node>),
    Call(Func, Vec<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Min,
    Max,
    Abs,
    Sqrt,
    Pow,
}

impl Func {
    fn parse(name: &str) -> Option<(Func, usize)> {
        Some(match name {
            "min" => (Func::Min, 2),
            "max" => (Func::Max, 2),
            "abs" => (Func::Abs, 1),
            "sqrt" => (Func::Sqrt, 1),
            "pow" => (Func::Pow, 2),
            _ => return None,
        })
    }
}

/// A parsed band expression; it keeps its source text for display and serialisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    text: String,
    root: Node,
}

impl Serialize for Expr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Expr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Expr::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The longest expression accepted, in bytes: a band formula is a line, not a program.
pub const MAX_EXPR_LEN: usize = 4096;
/// The deepest nesting accepted (parentheses, unary minus, function calls, and the operands
/// of one chain of operators): the parser, the evaluator and dropping the tree recurse this
/// deep, on any thread's stack.
pub const MAX_EXPR_DEPTH: usize = 64;

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> Error {
        // A long expression is shown by its start: the position says where.
        let shown = match self.text.char_indices().nth(80) {
            Some((cut, _)) => format!("{}…", &self.text[..cut]),
            None => self.text.to_string(),
        };
        Error::invalid(format!(
            "expression `{shown}`: {what} at character {}",
            self.pos + 1
        ))
    }

    /// Enters one level of nesting; refuses past [`MAX_EXPR_DEPTH`].
    fn deeper(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return Err(self.err(&format!("nested more than {MAX_EXPR_DEPTH} deep")));
        }
        Ok(())
    }

    fn skip_ws(&mut self) {
        // By characters, not bytes: Unicode has spaces of several bytes (U+2001, found by
        // fuzzing, made the next slice cut a character in two).
        while let Some(c) = self.text[self.pos..]
            .chars()
            .next()
            .filter(|c| c.is_whitespace())
        {
            self.pos += c.len_utf8();
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.text[self.pos..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// A chain of `+`/`-` terms. Each operator makes the tree one level deeper (it is
    /// left-leaning), so a chain counts against the depth too.
    fn expr(&mut self) -> Result<Node> {
        let depth = self.depth;
        let mut node = self.term()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.pos += 1;
            self.deeper()?;
            node = Node::Bin(op, Box::new(node), Box::new(self.term()?));
        }
        self.depth = depth;
        Ok(node)
    }

    fn term(&mut self) -> Result<Node> {
        let depth = self.depth;
        let mut node = self.unary()?;
        while let Some(op @ ('*' | '/')) = self.peek() {
            self.pos += 1;
            self.deeper()?;
            node = Node::Bin(op, Box::new(node), Box::new(self.unary()?));
        }
        self.depth = depth;
        Ok(node)
    }

    fn unary(&mut self) -> Result<Node> {
        if self.eat('-') {
            self.deeper()?;
            let node = Node::Neg(Box::new(self.unary()?));
            self.depth -= 1;
            return Ok(node);
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Node> {
        match self.peek() {
            Some('(') => {
                self.pos += 1;
                self.deeper()?;
                let n = self.expr()?;
                if !self.eat(')') {
                    return Err(self.err("expected `)`"));
                }
                self.depth -= 1;
                Ok(n)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {
                let start = self.pos;
                let rest = &self.text[start..];
                let mut len = rest
                    .find(|ch: char| !(ch.is_ascii_digit() || ch == '.' || ch == 'e' || ch == 'E'))
                    .unwrap_or(rest.len());
                // An exponent sign: 1e-3.
                if rest[..len].ends_with(['e', 'E']) && rest[len..].starts_with(['-', '+']) {
                    len += 1 + rest[len + 1..]
                        .find(|ch: char| !ch.is_ascii_digit())
                        .unwrap_or(rest.len() - len - 1);
                }
                let v: f64 = rest[..len]
                    .parse()
                    .map_err(|_| self.err(&format!("bad number `{}`", &rest[..len])))?;
                self.pos += len;
                Ok(Node::Num(v))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                let rest = &self.text[start..];
                let len = rest
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .unwrap_or(rest.len());
                let name = &rest[..len];
                self.pos += len;
                if let Some(BandRef(n)) = parse_band(name) {
                    return Ok(Node::Band(n));
                }
                let Some((func, arity)) = Func::parse(name) else {
                    self.pos = start;
                    return Err(self.err(&format!("unknown name `{name}` (bands are b1, b2, ...; functions min, max, abs, sqrt, pow)")));
                };
                if !self.eat('(') {
                    return Err(self.err(&format!("expected `(` after `{name}`")));
                }
                self.deeper()?;
                let mut args = vec![self.expr()?];
                while self.eat(',') {
                    args.push(self.expr()?);
                }
                if !self.eat(')') {
                    return Err(self.err("expected `)`"));
                }
                self.depth -= 1;
                if args.len() != arity {
                    return Err(self.err(&format!(
                        "`{name}` takes {arity} argument{}, not {}",
                        if arity == 1 { "" } else { "s" },
                        args.len()
                    )));
                }
                Ok(Node::Call(func, args))
            }
            Some(c) => Err(self.err(&format!("unexpected `{c}`"))),
            None => Err(self.err("unexpected end")),
        }
    }
}

fn bands_of(n: &Node, out: &mut Vec<BandRef>) {
    match n {
        Node::Num(_) => {}
        Node::Band(b) => out.push(BandRef(*b)),
        Node::Neg(a) => bands_of(a, out),
        Node::Bin(_, a, b) => {
            bands_of(a, out);
            bands_of(b, out);
        }
        Node::Call(_, args) => args.iter().for_each(|a| bands_of(a, out)),
    }
}

fn eval(n: &Node, stack: &[Array2<f64>], shape: (usize, usize)) -> Array2<f64> {
    match n {
        Node::Num(v) => Array2::from_elem(shape, *v),
        Node::Band(b) => stack[b - 1].clone(),
        Node::Neg(a) => -eval(a, stack, shape),
        Node::Bin(op, a, b) => {
            let mut x = eval(a, stack, shape);
            let y = eval(b, stack, shape);
            let f: fn(f64, f64) -> f64 = match op {
                '+' => |a, b| a + b,
                '-' => |a, b| a - b,
                '*' => |a, b| a * b,
                _ => |a, b| a / b,
            };
            Zip::from(&mut x)
                .and(&y)
                .for_each(|x, &y| *x = clean(f(*x, y)));
            x
        }
        Node::Call(func, args) => {
            let mut x = eval(&args[0], stack, shape);
            match func {
                Func::Abs => x.mapv_inplace(f64::abs),
                Func::Sqrt => x.mapv_inplace(|v| clean(v.sqrt())),
                Func::Min | Func::Max | Func::Pow => {
                    let y = eval(&args[1], stack, shape);
                    let func = *func;
                    Zip::from(&mut x).and(&y).for_each(|x, &y| {
                        *x = if x.is_nan() || y.is_nan() {
                            f64::NAN
                        } else {
                            match func {
                                Func::Min => x.min(y),
                                Func::Max => x.max(y),
                                _ => clean(x.powf(y)),
                            }
                        }
                    });
                }
            }
            x
        }
    }
}

impl Expr {
    /// Parses an expression; one longer than [`MAX_EXPR_LEN`] or nested deeper than
    /// [`MAX_EXPR_DEPTH`] is refused before it can exhaust a stack.
    pub fn parse(text: &str) -> Result<Expr> {
        if text.len() > MAX_EXPR_LEN {
            return Err(Error::invalid(format!(
                "expression of {} bytes: at most {MAX_EXPR_LEN} are accepted",
                text.len()
            )));
        }
        let mut p = Parser {
            text,
            pos: 0,
            depth: 0,
        };
        let root = p.expr()?;
        if p.peek().is_some() {
            return Err(p.err("unexpected text"));
        }
        Ok(Expr {
            text: text.to_string(),
            root,
        })
    }

    /// The bands the expression reads.
    pub fn bands(&self) -> Vec<BandRef> {
        let mut v = Vec::new();
        bands_of(&self.root, &mut v);
        v
    }

    /// Evaluates over a non-empty stack of equally shaped bands.
    pub fn eval(&self, stack: &[Array2<f64>]) -> Array2<f64> {
        let shape = stack.first().map_or((0, 0), |a| a.dim());
        eval(&self.root, stack, shape)
    }
}

impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn precedence_functions_and_unary_minus() {
        let s = vec![array![[2.0, 4.0]], array![[3.0, f64::NAN]]];
        let e = Expr::parse("(b2 - b1) / (b2 + b1)").unwrap();
        let v = e.eval(&s);
        assert!((v[(0, 0)] - 0.2).abs() < 1e-15);
        assert!(v[(0, 1)].is_nan());
        let v = Expr::parse("1 + 2 * b1 - -3").unwrap().eval(&s);
        assert_eq!(v[(0, 0)], 8.0);
        let v = Expr::parse("max(b1, 3) + sqrt(abs(-16)) + pow(2, 3) + 1.5e1 + 2e-1")
            .unwrap()
            .eval(&s);
        assert!((v[(0, 0)] - (3.0 + 4.0 + 8.0 + 15.0 + 0.2)).abs() < 1e-12);
        assert_eq!(
            Expr::parse("b1 * (b2 + b10)").unwrap().bands(),
            vec![BandRef(1), BandRef(2), BandRef(10)]
        );
    }

    #[test]
    fn syntax_errors_say_where() {
        for (text, want) in [
            ("b1 +", "unexpected end at character 5"),
            ("(b1 + b2", "expected `)`"),
            ("b1 $ b2", "unexpected text at character 4"),
            ("ndvi(b1)", "unknown name `ndvi`"),
            ("min(b1)", "`min` takes 2 arguments, not 1"),
            ("b0 + 1", "unknown name `b0`"),
            (
                "-----------------------------------------------------------------b1",
                "nested more than 64 deep",
            ),
        ] {
            let err = Expr::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    /// Issue 20, finding 1: a 30 KB chain of `b1+` terms overflowed the coordinator's stack
    /// when planned, and 3,000 nested parentheses aborted the CLI. Both are refused now, with
    /// a reason, and nesting up to the limit still evaluates.
    #[test]
    fn huge_and_deep_expressions_are_refused_not_a_stack_overflow() {
        let chain = "b1+".repeat(10_000) + "b1";
        let err = Expr::parse(&chain).unwrap_err().to_string();
        assert!(err.contains("at most 4096 are accepted"), "{err}");
        let parens = "(".repeat(3000) + "b1" + &")".repeat(3000);
        let err = Expr::parse(&parens).unwrap_err().to_string();
        assert!(err.contains("at most 4096"), "{err}");
        let parens = "(".repeat(2000) + "b1" + &")".repeat(2000);
        let err = Expr::parse(&parens).unwrap_err().to_string();
        assert!(err.contains("nested more than 64 deep"), "{err}");
        let chain = "b1+".repeat(1300) + "b1";
        let err = Expr::parse(&chain).unwrap_err().to_string();
        assert!(err.contains("nested more than 64 deep"), "{err}");
        for f in ["sqrt(", "abs(", "-"] {
            let deep = f.repeat(2000) + "b1";
            assert!(Expr::parse(&deep).is_err(), "{f}");
        }
        // Within the limits: 60 nested parentheses and a chain of 60 terms.
        let ok = "(".repeat(60) + "b1" + &")".repeat(60);
        let s = vec![ndarray::array![[2.0]]];
        assert_eq!(Expr::parse(&ok).unwrap().eval(&s)[(0, 0)], 2.0);
        let chain = "b1+".repeat(59) + "b1";
        assert_eq!(Expr::parse(&chain).unwrap().eval(&s)[(0, 0)], 120.0);
    }
}
