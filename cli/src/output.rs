//! One human format for every listing (a header row, aligned columns, times a person reads) and
//! `--json` for scripts (the API's items as one JSON array, every page of them).

use serde::Serialize;

use super::{Failure, local};

/// A listing about to be printed.
pub(crate) struct Table {
    headers: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &'static [&'static str]) -> Self {
        Table {
            headers,
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// The table as text: a header row and aligned columns; `empty` alone when there are no
    /// rows (so nobody reads a bare header as "something went wrong").
    pub(crate) fn render(&self, empty: &str) -> String {
        if self.rows.is_empty() {
            return format!("{empty}\n");
        }
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for (i, (c, w)) in cells.zip(&widths).enumerate() {
                if i + 1 == widths.len() {
                    out.push_str(c);
                } else {
                    out.push_str(c);
                    out.push_str(&" ".repeat(w - c.chars().count() + 2));
                }
            }
            out.trim_end().to_string() + "\n"
        };
        let mut out = line(&mut self.headers.iter().copied());
        for r in &self.rows {
            out.push_str(&line(&mut r.iter().map(String::as_str)));
        }
        out
    }
}

/// Prints `items` as JSON (`--json`) or as the table `table` makes of them.
pub(crate) fn print<T: Serialize>(
    items: &[T],
    json: bool,
    table: impl FnOnce(&[T]) -> Table,
    empty: &str,
) -> Result<(), Failure> {
    if json {
        println!("{}", serde_json::to_string_pretty(items).map_err(local)?);
    } else {
        print!("{}", table(items).render(empty));
    }
    Ok(())
}

/// An RFC 3339 time from the API as `YYYY-MM-DD HH:MM UTC` (as given if it does not parse).
pub(crate) fn time(rfc3339: &str) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&f).ok())
        .unwrap_or_else(|| rfc3339.to_string())
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn unix(secs: i64) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&f).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// A list cell: the items joined, or `-` when there are none.
pub(crate) fn joined(items: &[String]) -> String {
    if items.is_empty() { "-".into() } else { items.join(",") }
}

/// A byte count for people, in binary units: `512 B`, `1.0 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_under_their_headers() {
        let mut t = Table::new(&["ID", "TYPE", "ROLES"]);
        t.row(vec!["admin".into(), "participant".into(), "admin".into()]);
        t.row(vec!["a-much-longer-id".into(), "node".into(), "-".into()]);
        let text = t.render("none");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID                TYPE         ROLES");
        assert_eq!(lines[1], "admin             participant  admin");
        assert_eq!(lines[2], "a-much-longer-id  node         -");
        assert_eq!(Table::new(&["ID"]).render("no identities"), "no identities\n");
    }

    #[test]
    fn times_read_as_dates() {
        assert_eq!(time("2026-12-06T07:05:09Z"), "2026-12-06 07:05 UTC");
        assert_eq!(time("not a time"), "not a time");
        assert_eq!(unix(0), "1970-01-01 00:00 UTC");
    }
}
