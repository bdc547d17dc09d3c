//! What the TOML files batchling reads (the limits file, the routes config)
//! share: a bounded read, and a walk over `toml::de::DeTable` whose errors
//! name the line and the field. Each file turns a [`Problem`] into its own
//! error type, adding the file's name.

use std::io::Read;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A key and its value in a parsed table.
pub(crate) type Item<'a> = (
    &'a Spanned<std::borrow::Cow<'a, str>>,
    &'a Spanned<DeValue<'a>>,
);

/// What is wrong at one place of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The line (from 1), when known.
    pub(crate) line: Option<usize>,
    /// The field as a dotted path (`models.gpt-4o.rpm`); empty when the
    /// text is not TOML.
    pub(crate) field: String,
    /// What is wrong.
    pub(crate) message: String,
}

/// Why a file was not read.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// Opening or reading failed.
    Io(std::io::Error),
    /// Larger than the bound given.
    TooLarge,
}

/// Read a text file of at most `max` bytes, never allocating more than
/// `max + 1` for it.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<String, ReadFailure> {
    let file = std::fs::File::open(path).map_err(ReadFailure::Io)?;
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(ReadFailure::Io)?;
    if text.len() as u64 > max {
        return Err(ReadFailure::TooLarge);
    }
    Ok(text)
}

/// A parsed document's text, to turn offsets into lines.
#[derive(Clone, Copy)]
pub(crate) struct Doc<'t> {
    text: &'t str,
}

impl<'t> Doc<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Doc { text }
    }

    /// Parse the text; a syntax error names its line.
    pub(crate) fn parse(&self) -> Result<Spanned<DeTable<'t>>, Problem> {
        DeTable::parse(self.text).map_err(|e| Problem {
            line: e.span().map(|s| self.line(s.start)),
            field: String::new(),
            message: format!("invalid TOML: {}", e.message().trim()),
        })
    }

    /// The line (from 1) of a byte offset.
    pub(crate) fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// A problem at a byte offset.
    pub(crate) fn at(&self, offset: usize, field: &str, message: impl Into<String>) -> Problem {
        Problem {
            line: Some(self.line(offset)),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn table<'v>(
        &self,
        value: &'v Spanned<DeValue<'v>>,
        field: &str,
    ) -> Result<&'v DeTable<'v>, Problem> {
        match value.get_ref() {
            DeValue::Table(t) => Ok(t),
            other => Err(self.found(value, field, "a table", other)),
        }
    }

    pub(crate) fn string<'v>(
        &self,
        value: &'v Spanned<DeValue<'v>>,
        field: &str,
    ) -> Result<&'v str, Problem> {
        match value.get_ref() {
            DeValue::String(s) => Ok(s),
            other => Err(self.found(value, field, "a string", other)),
        }
    }

    /// A non-empty list of non-empty strings.
    pub(crate) fn strings(
        &self,
        value: &Spanned<DeValue<'_>>,
        field: &str,
    ) -> Result<Vec<String>, Problem> {
        let strings = self.string_list(value, field)?;
        if strings.is_empty() {
            return Err(self.at(value.span().start, field, "the list is empty"));
        }
        Ok(strings)
    }

    /// A list, maybe empty, of non-empty strings.
    pub(crate) fn string_list(
        &self,
        value: &Spanned<DeValue<'_>>,
        field: &str,
    ) -> Result<Vec<String>, Problem> {
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.found(value, field, "a list of strings", value.get_ref()));
        };
        (items.iter())
            .map(|item| match item.get_ref() {
                DeValue::String(s) if !s.is_empty() => Ok(s.to_string()),
                other => Err(self.found(item, field, "a non-empty string", other)),
            })
            .collect()
    }

    /// An integer above 0.
    pub(crate) fn positive(
        &self,
        value: &Spanned<DeValue<'_>>,
        field: &str,
    ) -> Result<u64, Problem> {
        match value.get_ref() {
            DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    self.at(
                        value.span().start,
                        field,
                        format!("expected a positive integer, found {}", i.as_str()),
                    )
                }),
            other => Err(self.found(value, field, "a positive integer", other)),
        }
    }

    /// A finite number, integer or float.
    pub(crate) fn number(&self, value: &Spanned<DeValue<'_>>, field: &str) -> Result<f64, Problem> {
        let parsed = match value.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            other => return Err(self.found(value, field, "a number", other)),
        };
        parsed.filter(|n| n.is_finite()).ok_or_else(|| {
            self.at(
                value.span().start,
                field,
                "expected a finite number, found too large or not a number",
            )
        })
    }

    /// "expected X, found Y" at a value.
    pub(crate) fn found(
        &self,
        at: &Spanned<DeValue<'_>>,
        field: &str,
        expected: &str,
        found: &DeValue<'_>,
    ) -> Problem {
        let found = match found {
            DeValue::String(s) => format!("the string {s:?}"),
            DeValue::Integer(i) => format!("the integer {}", i.as_str()),
            DeValue::Float(_) => "a float".into(),
            DeValue::Boolean(b) => format!("the boolean {b}"),
            DeValue::Datetime(_) => "a date".into(),
            DeValue::Array(_) => "a list".into(),
            DeValue::Table(_) => "a table".into(),
        };
        self.at(
            at.span().start,
            field,
            format!("expected {expected}, found {found}"),
        )
    }
}

/// The known name closest to `word`, when it is close enough to be a typo:
/// at most a third of its letters wrong (a swap of two counts as one), so
/// words under three letters get no suggestion.
pub(crate) fn closest<'k>(word: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    let limit = word.chars().count() / 3;
    // Long words are no typos worth the quadratic distance.
    if limit == 0 || word.len() > 64 {
        return None;
    }
    known
        .into_iter()
        .filter(|k| k.len() <= 64)
        .map(|k| (edit_distance(word, k), k))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Edits (insert, delete, replace, swap two neighbours) from `a` to `b`:
/// the optimal string alignment distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * width + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (d[(i - 1) * width + j] + 1)
                    .min(d[i * width + j - 1] + 1)
                    .min(d[(i - 1) * width + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[(i - 2) * width + j - 2] + 1);
                }
                best
            };
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_suggests_typos_only() {
        let known = ["providers", "groups", "models", "routes"];
        assert_eq!(closest("provider", known), Some("providers"));
        assert_eq!(closest("rootes", known), Some("routes"));
        assert_eq!(closest("limits", known), None);
        assert_eq!(closest("x", ["y"]), None);
        assert_eq!(closest("mian", ["main"]), Some("main"));
        assert_eq!(closest("ab", ["xy"]), None);
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(edit_distance("rmp", "rpm"), 1);
    }
}
