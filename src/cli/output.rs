//! `-o table|json|yaml`: one list of rows, printed as kubectl prints (a table without
//! borders, columns three spaces apart) or as a JSON/YAML list of camelCase objects.

use super::Error;
/// (Shared with the controller's log lines.)
pub use crate::rotation::one_line;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// How a command prints what it found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Columns, for people.
    #[default]
    Table,
    /// A JSON list of objects with camelCase keys.
    Json,
    /// The same list as YAML.
    Yaml,
}

/// The `-o/--output` flag.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `value` as JSON or YAML (a table is the caller's: its columns are not the fields).
pub fn document<T: Serialize + ?Sized>(value: &T, output: Output) -> Result<String, Error> {
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(value)? + "\n",
        Output::Yaml => serde_yaml::to_string(value)?,
        Output::Table => String::new(),
    })
}

/// What `rows` print as without a table: JSON or YAML as asked, and for a table of no
/// rows nothing at all (as kubectl: the caller says so on stderr). `None`: build the
/// table.
pub fn without_table<T: Serialize>(rows: &[T], output: Output) -> Option<Result<String, Error>> {
    if output != Output::Table {
        return Some(document(rows, output));
    }
    rows.is_empty().then(|| Ok(String::new()))
}

/// A table like kubectl's: a header of upper-case words, one line per row, columns
/// three spaces apart, no borders, no trailing blanks.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header(header.to_vec());
    for row in rows {
        table.add_row(row.into_iter().map(|cell| one_line(&cell)));
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 3));
    }
    let mut text = table.trim_fmt();
    text.push('\n');
    text
}

/// `text` cut to at most `max` characters, the cut marked with "...".
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max.saturating_sub(3)).collect();
    format!("{}...", kept.trim_end())
}

/// How long ago `at` was, as kubectl prints an age ("45s", "5m", "3h20m", "2d").
pub fn age(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match at {
        Some(at) => human_duration((now - at).num_seconds().max(0)),
        None => "-".into(),
    }
}

/// When `at` comes: "in 5h", or how late it is ("5m ago").
pub fn until(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match at {
        Some(at) if at > now => format!("in {}", human_duration((at - now).num_seconds())),
        Some(at) => format!("{} ago", human_duration((now - at).num_seconds())),
        None => "-".into(),
    }
}

/// A duration the way kubectl's `HumanDuration` rounds it: precise when short, coarse
/// when long.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 && s % 60 != 0 {
        format!("{m}m{}s", s % 60)
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 && m % 60 != 0 {
        format!("{h}h{}m", m % 60)
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 && h % 24 != 0 {
        format!("{d}d{}h", h % 24)
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 && d % 365 != 0 {
        format!("{}y{}d", d / 365, d % 365)
    } else {
        format!("{}y", d / 365)
    }
}

/// An RFC 3339 time, or "-".
pub fn time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".into(), |t| t.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl_ages() {
        for (seconds, shown) in [
            (-5, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (150, "2m30s"),
            (300, "5m"),
            (3_000, "50m"),
            (3 * 3600 + 20 * 60, "3h20m"),
            (5 * 3600, "5h"),
            (23 * 3600, "23h"),
            (2 * 86_400 + 5 * 3600, "2d5h"),
            (30 * 86_400, "30d"),
            (3 * 365 * 86_400 + 86_400, "3y1d"),
            (10 * 365 * 86_400, "10y"),
        ] {
            assert_eq!(human_duration(seconds), shown, "{seconds}s");
        }
    }

    #[test]
    fn times_are_ages_or_countdowns() {
        let now = Utc::now();
        let hour = chrono::Duration::hours(1);
        assert_eq!(age(Some(now - hour), now), "60m");
        assert_eq!(until(Some(now + hour * 5), now), "in 5h");
        assert_eq!(until(Some(now - hour * 5), now), "5h ago");
        assert_eq!(age(None, now), "-");
        assert_eq!(until(None, now), "-");
    }

    #[test]
    fn a_table_has_no_borders_and_no_trailing_blanks() {
        let text = table(
            &["NAME", "PHASE", "MESSAGE"],
            vec![
                vec!["a".into(), "Success".into(), "rotated".into()],
                vec![
                    "longer-name".into(),
                    "Failed".into(),
                    "line\nbreak\x1b[2J".into(),
                ],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME          PHASE     MESSAGE",
                "a             Success   rotated",
                "longer-name   Failed    line break [2J",
            ],
            "{text}"
        );
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééééééééééé", 8), "ééééé...");
        assert_eq!(truncate("a b c d e f", 6), "a b...");
        assert_eq!(truncate("abc", 0), "...");
    }

    #[test]
    fn a_cell_cannot_reorder_or_hide_text() {
        assert_eq!(
            one_line("ok\u{202E}deliaf\u{2066}x\u{200B}y\u{9B}2J"),
            "ok deliaf x y 2J"
        );
    }
}
