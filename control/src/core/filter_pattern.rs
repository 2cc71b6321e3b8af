//! CloudWatch Logs' filter pattern syntax (FilterLogEvents'
//! `filterPattern`), as AWS defines it:
//!
//! - terms: `ERROR Exception` (all must appear, case-sensitive),
//!   `"quoted phrases"`, `?term` (at least one of these), `-term` (none of
//!   these), `%regex%`;
//! - JSON: `{ $.level = "error" && ($.latency > 100 || $.user.id IS NULL) }`
//!   with `=`, `!=` (strings, `*` wildcards), `<`, `<=`, `>`, `>=`
//!   (numbers), `IS TRUE`, `IS FALSE`, `IS NULL`, `NOT EXISTS`, selectors
//!   `$.a.b`, `$.a[0]`, `$.*`-free paths;
//! - space-delimited: `[ip, user, ..., status = 4*, bytes > 1000]`, fields
//!   split on spaces (a `"quoted"` or `[bracketed]` field is one), `...`
//!   for any number of fields, conditions joined by `&&` and `||`.

use crate::error::ApiError;
use serde_json::Value;

/// A parsed filter pattern.
#[derive(Debug)]
pub(crate) enum FilterPattern {
    Terms(Terms),
    Json(Expr),
    Delimited {
        fields: Vec<Field>,
        cond: Option<Expr>,
    },
}

#[derive(Debug, Default)]
pub(crate) struct Terms {
    all: Vec<Term>,
    none: Vec<Term>,
    any: Vec<Term>,
}

#[derive(Debug)]
enum Term {
    Text(String),
    Regex(regex::Regex),
}

impl Term {
    fn matches(&self, s: &str) -> bool {
        match self {
            Term::Text(t) => s.contains(t.as_str()),
            Term::Regex(r) => r.is_match(s),
        }
    }
}

/// A space-delimited pattern's field: a name, or `...`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field {
    Named(String),
    Rest,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(String, Op, Literal),
    /// `IS TRUE`, `IS FALSE`, `IS NULL`, `NOT EXISTS`.
    Is(String, Is),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Is {
    True,
    False,
    Null,
    Missing,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Num(f64),
    Str(String),
}

fn invalid(why: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_parameter(format!("Invalid filter pattern: {why}"))
}

impl FilterPattern {
    pub(crate) fn parse(s: &str) -> Result<FilterPattern, ApiError> {
        let t = s.trim();
        if let Some(inner) = t.strip_prefix('{') {
            let inner = inner
                .strip_suffix('}')
                .ok_or_else(|| invalid("a JSON pattern ends with '}'"))?;
            let mut p = Parser::new(inner);
            let e = p.expr()?;
            p.end()?;
            return Ok(FilterPattern::Json(e));
        }
        if let Some(inner) = t.strip_prefix('[') {
            let (fields, cond) = inner
                .split_once(']')
                .ok_or_else(|| invalid("a space-delimited pattern ends with ']'"))?;
            if !cond.trim().is_empty() {
                return Err(invalid(format!("unexpected '{}' after ']'", cond.trim())));
            }
            return parse_delimited(fields);
        }
        parse_terms(t).map(FilterPattern::Terms)
    }

    pub(crate) fn matches(&self, message: &str) -> bool {
        match self {
            FilterPattern::Terms(t) => {
                t.all.iter().all(|x| x.matches(message))
                    && !t.none.iter().any(|x| x.matches(message))
                    && (t.any.is_empty() || t.any.iter().any(|x| x.matches(message)))
            }
            FilterPattern::Json(e) => match serde_json::from_str::<Value>(message.trim()) {
                Ok(doc) => eval(e, &|sel| json_lookup(&doc, sel)),
                Err(_) => false,
            },
            FilterPattern::Delimited { fields, cond } => {
                let Some(values) = bind(fields, &split_fields(message)) else {
                    return false;
                };
                cond.as_ref().is_none_or(|c| {
                    eval(c, &|name| {
                        values
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| Value::String(v.clone()))
                    })
                })
            }
        }
    }
}

fn parse_terms(s: &str) -> Result<Terms, ApiError> {
    let mut p = Terms::default();
    let mut rest = s;
    while !rest.trim_start().is_empty() {
        rest = rest.trim_start();
        let (kind, after) = match rest.chars().next() {
            Some('-') => ('-', &rest[1..]),
            Some('?') => ('?', &rest[1..]),
            _ => (' ', rest),
        };
        let (term, tail) = if let Some(q) = after.strip_prefix('"') {
            let (t, tail) = q
                .split_once('"')
                .ok_or_else(|| invalid("a quoted phrase is not closed"))?;
            (Term::Text(t.to_string()), tail)
        } else if let Some(r) = after.strip_prefix('%') {
            let (t, tail) = r
                .split_once('%')
                .ok_or_else(|| invalid("a %regex% is not closed"))?;
            let re = regex::Regex::new(t).map_err(|e| invalid(format!("%{t}%: {e}")))?;
            (Term::Regex(re), tail)
        } else {
            let (t, tail) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
            (Term::Text(t.to_string()), tail)
        };
        if !matches!(&term, Term::Text(t) if t.is_empty()) {
            match kind {
                '-' => p.none.push(term),
                '?' => p.any.push(term),
                _ => p.all.push(term),
            }
        }
        rest = tail;
    }
    Ok(p)
}

fn parse_delimited(s: &str) -> Result<FilterPattern, ApiError> {
    // Fields are comma-separated; a field may carry its condition
    // (`status = 404`, `bytes > 10 && bytes < 100`).
    let mut fields = Vec::new();
    let mut cond: Option<Expr> = None;
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(invalid("an empty field"));
        }
        if part == "..." {
            fields.push(Field::Rest);
            continue;
        }
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        if name.is_empty() {
            return Err(invalid(format!(
                "'{part}' does not start with a field name"
            )));
        }
        fields.push(Field::Named(name.clone()));
        if part.len() > name.len() {
            let mut p = Parser::new(part);
            p.delimited = true;
            let e = p.expr()?;
            p.end()?;
            cond = Some(match cond {
                Some(c) => Expr::And(Box::new(c), Box::new(e)),
                None => e,
            });
        }
    }
    Ok(FilterPattern::Delimited { fields, cond })
}

/// A message's space-delimited fields: a `"quoted"` or `[bracketed]`
/// run is one field (quotes and brackets removed).
fn split_fields(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut field = String::new();
        if c == '"' || c == '[' {
            let close = if c == '"' { '"' } else { ']' };
            chars.next();
            for d in chars.by_ref() {
                if d == close {
                    break;
                }
                field.push(d);
            }
        } else {
            while let Some(&d) = chars.peek() {
                if d.is_whitespace() {
                    break;
                }
                field.push(d);
                chars.next();
            }
        }
        out.push(field);
    }
    out
}

/// Names the message's fields by the pattern's; `None` when the counts
/// cannot agree.
fn bind(fields: &[Field], values: &[String]) -> Option<Vec<(String, String)>> {
    let rest = fields.iter().filter(|f| **f == Field::Rest).count();
    let named = fields.len() - rest;
    if values.len() < named || (rest == 0 && values.len() != named) {
        return None;
    }
    let spare = values.len() - named;
    let mut out = Vec::new();
    let mut i = 0;
    let mut first_rest = true;
    for f in fields {
        match f {
            Field::Named(n) => {
                out.push((n.clone(), values[i].clone()));
                i += 1;
            }
            // The first `...` takes what the others leave.
            Field::Rest => {
                if first_rest {
                    i += spare;
                    first_rest = false;
                }
            }
        }
    }
    Some(out)
}

/// `$.a.b[0]` in `doc`.
fn json_lookup(doc: &Value, selector: &str) -> Option<Value> {
    let path = selector.strip_prefix('$')?;
    let mut cur = doc;
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let (idx, tail) = r.split_once(']')?;
            cur = cur.get(idx.trim().parse::<usize>().ok()?)?;
            rest = tail;
        } else {
            return None;
        }
    }
    Some(cur.clone())
}

fn eval(e: &Expr, get: &dyn Fn(&str) -> Option<Value>) -> bool {
    match e {
        Expr::And(a, b) => eval(a, get) && eval(b, get),
        Expr::Or(a, b) => eval(a, get) || eval(b, get),
        Expr::Is(sel, is) => {
            let v = get(sel);
            match is {
                Is::Missing => v.is_none(),
                Is::Null => v.is_some_and(|v| v.is_null()),
                Is::True => v == Some(Value::Bool(true)),
                Is::False => v == Some(Value::Bool(false)),
            }
        }
        Expr::Cmp(sel, op, lit) => {
            let Some(v) = get(sel) else {
                return false;
            };
            let number = match &v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.parse::<f64>().ok(),
                _ => None,
            };
            match lit {
                Literal::Num(n) => number.is_some_and(|x| match op {
                    Op::Eq => x == *n,
                    Op::Ne => x != *n,
                    Op::Lt => x < *n,
                    Op::Le => x <= *n,
                    Op::Gt => x > *n,
                    Op::Ge => x >= *n,
                }),
                Literal::Str(want) => {
                    let have = match &v {
                        Value::String(s) => s.clone(),
                        Value::Null => return false,
                        other => other.to_string(),
                    };
                    let eq = wildcard(want, &have);
                    match op {
                        Op::Eq => eq,
                        Op::Ne => !eq,
                        _ => false,
                    }
                }
            }
        }
    }
}

/// `*` matches any run of characters.
fn wildcard(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let mut rest = s;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

/// A recursive-descent parser of JSON and delimited conditions.
struct Parser<'a> {
    s: &'a str,
    at: usize,
    /// Selectors are field names (space-delimited), not `$.` paths.
    delimited: bool,
}

impl<'a> Parser<'a> {
    fn new(s: &'a str) -> Self {
        Parser {
            s,
            at: 0,
            delimited: false,
        }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.at..]
    }

    fn skip(&mut self) {
        let trimmed = self.rest().trim_start();
        self.at = self.s.len() - trimmed.len();
    }

    fn eat(&mut self, t: &str) -> bool {
        self.skip();
        if self.rest().starts_with(t) {
            self.at += t.len();
            true
        } else {
            false
        }
    }

    fn end(&mut self) -> Result<(), ApiError> {
        self.skip();
        if self.rest().is_empty() {
            Ok(())
        } else {
            Err(invalid(format!("unexpected '{}'", self.rest())))
        }
    }

    fn expr(&mut self) -> Result<Expr, ApiError> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ApiError> {
        let mut left = self.atom()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.atom()?));
        }
        Ok(left)
    }

    fn atom(&mut self) -> Result<Expr, ApiError> {
        if self.eat("(") {
            let e = self.expr()?;
            if !self.eat(")") {
                return Err(invalid("a '(' is not closed"));
            }
            return Ok(e);
        }
        self.skip();
        let sel_len = self
            .rest()
            .find(|c: char| c.is_whitespace() || "=!<>()&|".contains(c))
            .unwrap_or(self.rest().len());
        let selector = self.rest()[..sel_len].to_string();
        if selector.is_empty() || (!self.delimited && !selector.starts_with('$')) {
            return Err(invalid(format!(
                "expected a selector ($.field) at '{}'",
                self.rest()
            )));
        }
        self.at += sel_len;
        for (word, is) in [
            ("IS TRUE", Is::True),
            ("IS FALSE", Is::False),
            ("IS NULL", Is::Null),
            ("NOT EXISTS", Is::Missing),
        ] {
            if self.eat(word) {
                return Ok(Expr::Is(selector, is));
            }
        }
        let op = if self.eat("!=") {
            Op::Ne
        } else if self.eat("<=") {
            Op::Le
        } else if self.eat(">=") {
            Op::Ge
        } else if self.eat("=") {
            Op::Eq
        } else if self.eat("<") {
            Op::Lt
        } else if self.eat(">") {
            Op::Gt
        } else {
            return Err(invalid(format!(
                "expected a comparison after {selector} at '{}'",
                self.rest()
            )));
        };
        self.skip();
        let lit = if let Some(q) = self.rest().strip_prefix('"') {
            let (v, _) = q
                .split_once('"')
                .ok_or_else(|| invalid("a quoted value is not closed"))?;
            self.at += v.len() + 2;
            Literal::Str(v.to_string())
        } else {
            let len = self
                .rest()
                .find(|c: char| c.is_whitespace() || "()&|".contains(c))
                .unwrap_or(self.rest().len());
            let raw = &self.rest()[..len];
            if raw.is_empty() {
                return Err(invalid(format!("expected a value after {selector}")));
            }
            self.at += len;
            match raw.parse::<f64>() {
                Ok(n) => Literal::Num(n),
                Err(_) => Literal::Str(raw.to_string()),
            }
        };
        if matches!(lit, Literal::Str(_)) && !matches!(op, Op::Eq | Op::Ne) {
            return Err(invalid(format!(
                "{selector}: only = and != compare strings"
            )));
        }
        Ok(Expr::Cmp(selector, op, lit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, message: &str) -> bool {
        FilterPattern::parse(pattern).unwrap().matches(message)
    }

    #[test]
    fn terms_phrases_optional_excluded_and_regex() {
        assert!(m("ERROR", "an ERROR here"));
        assert!(!m("ERROR", "an error here"), "case-sensitive");
        assert!(m("ERROR Exception", "ERROR: Exception thrown"));
        assert!(!m("ERROR -timeout", "ERROR timeout"));
        assert!(m("?ERROR ?WARN", "WARN disk"));
        assert!(m("\"disk full\"", "the disk full again"));
        assert!(m("%5[0-9]{2}%", "status 503"));
        assert!(!m("%5[0-9]{2}%", "status 404"));
        assert!(m("", "anything"));
    }

    #[test]
    fn json_patterns() {
        let doc = r#"{"level":"error","latency":250,"user":{"id":null,"name":"ann"},"tags":["a","b"],"ok":false}"#;
        assert!(m(r#"{ $.level = "error" }"#, doc));
        assert!(m(r#"{ $.level = "err*" }"#, doc));
        assert!(m("{ $.latency > 100 && $.latency <= 250 }", doc));
        assert!(!m("{ $.latency < 100 }", doc));
        assert!(m("{ $.user.id IS NULL }", doc));
        assert!(m("{ $.user.email NOT EXISTS }", doc));
        assert!(m("{ $.ok IS FALSE }", doc));
        assert!(m(r#"{ $.tags[1] = "b" }"#, doc));
        assert!(m(
            r#"{ ($.level = "info" || $.latency > 200) && $.user.name != "bob" }"#,
            doc
        ));
        assert!(!m(r#"{ $.level = "error" }"#, "not json"));
        for bad in [
            "{ $.a = }",
            "{ level = 1 }",
            "{ $.a > \"x\" }",
            "{ ($.a = 1 }",
            "{ $.a = 1",
        ] {
            assert!(FilterPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn space_delimited_patterns() {
        let line =
            r#"127.0.0.1 - frank [10/Oct/2000:13:25:15 -0700] "GET /a.gif HTTP/1.0" 404 1534"#;
        assert!(m(
            "[ip, id, user, timestamp, request, status_code = 404, bytes]",
            line
        ));
        assert!(m(
            "[ip, id, user, timestamp, request, status_code = 4*, bytes > 1000]",
            line
        ));
        assert!(!m(
            "[ip, id, user, timestamp, request, status_code = 200, bytes]",
            line
        ));
        assert!(m("[..., status_code = 404, bytes]", line));
        assert!(m("[ip = 127.0.0.1, ...]", line));
        assert!(!m("[a, b]", line), "the field count must agree");
        assert!(m("[..., status >= 400 && status < 500, bytes]", line));
    }
}
