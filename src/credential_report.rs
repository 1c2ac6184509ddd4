//! Parsing the IAM credential report (the CSV of GetCredentialReport) into a snapshot.
//!
//! Columns are found by header name, not position: AWS has added columns before. Values
//! follow AWS's documentation: `N/A` (does not apply: no password, no key in that slot, key
//! never used), `no_information` (no record, e.g. a password never used since 2014),
//! `not_supported` (the field does not exist for this row, e.g. the root user's password
//! rotation). The `<root_account>` row becomes [`Root`], not a user.
//!
//! The report has no access key ids. A key is identified by its slot: `access_key_id` is
//! `key_1` or `key_2` (the report's `access_key_1_*` / `access_key_2_*` columns; AWS fills
//! slot 1 first). Alerts keyed on `account_id, user, access_key_id` work on both sources.

use std::fmt;

use crate::inventory::{AccessKey, LastUse, Root, Snapshot, Timestamp, User};

/// What is wrong with a report, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportError(pub String);

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const ROOT: &str = "<root_account>";

/// Columns the exporter reads; the report may have more.
const REQUIRED: &[&str] = &[
    "user",
    "user_creation_time",
    "password_last_used",
    "mfa_active",
    "access_key_1_active",
    "access_key_1_last_rotated",
    "access_key_1_last_used_date",
    "access_key_1_last_used_region",
    "access_key_1_last_used_service",
    "access_key_2_active",
    "access_key_2_last_rotated",
    "access_key_2_last_used_date",
    "access_key_2_last_used_region",
    "access_key_2_last_used_service",
];

/// Parses a whole report. `generated` is the report's GeneratedTime.
pub fn parse(csv_bytes: &[u8], generated: Timestamp) -> Result<Snapshot, ReportError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(csv_bytes);
    let header = reader
        .byte_headers()
        .map_err(|e| ReportError(format!("credential report header: {e}")))?
        .clone();
    let header: Vec<String> = header
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect();
    let mut columns = [0usize; REQUIRED.len()];
    for (slot, name) in columns.iter_mut().zip(REQUIRED) {
        *slot = header.iter().position(|h| h == name).ok_or_else(|| {
            ReportError(format!(
                "credential report header lacks the column {name:?}"
            ))
        })?;
    }

    let mut snapshot = Snapshot {
        report_generated: Some(generated),
        ..Snapshot::default()
    };
    let mut record = csv::ByteRecord::new();
    // Row numbers as a spreadsheet shows them: the header is row 1.
    let mut row_number = 1;
    loop {
        row_number += 1;
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                return Err(ReportError(format!(
                    "credential report row {row_number}: {e}"
                )))
            }
        }
        let row = Row {
            record: &record,
            columns: &columns,
            number: row_number,
        };
        row.read_into(&mut snapshot)?;
    }
    Ok(snapshot.sorted())
}

struct Row<'a> {
    record: &'a csv::ByteRecord,
    columns: &'a [usize; REQUIRED.len()],
    number: usize,
}

impl Row<'_> {
    fn field(&self, name: &'static str) -> Result<&str, ReportError> {
        let i = REQUIRED
            .iter()
            .position(|n| *n == name)
            .expect("known column");
        let raw = self.record.get(self.columns[i]).unwrap_or(b"");
        std::str::from_utf8(raw)
            .map(str::trim)
            .map_err(|_| self.error(name, "is not valid UTF-8"))
    }

    fn error(&self, column: &str, what: &str) -> ReportError {
        ReportError(format!(
            "credential report row {}, column {column}: {what}",
            self.number
        ))
    }

    /// `true`/`false`.
    fn flag(&self, name: &'static str) -> Result<bool, ReportError> {
        match self.field(name)? {
            "true" | "TRUE" => Ok(true),
            "false" | "FALSE" | "N/A" | "not_supported" | "" => Ok(false),
            other => Err(self.error(name, &format!("expected true or false, found {other:?}"))),
        }
    }

    /// A date, or None for AWS's "no date" values.
    fn date(&self, name: &'static str) -> Result<Option<Timestamp>, ReportError> {
        match self.field(name)? {
            "N/A" | "no_information" | "not_supported" | "" => Ok(None),
            s => parse_date(s).map(Some).ok_or_else(|| {
                self.error(name, &format!("expected an ISO 8601 date, found {s:?}"))
            }),
        }
    }

    /// A free-text value, or None for AWS's "no value" markers.
    fn text(&self, name: &'static str) -> Result<Option<String>, ReportError> {
        Ok(match self.field(name)? {
            "N/A" | "no_information" | "not_supported" | "" => None,
            s => Some(s.to_string()),
        })
    }

    fn read_into(&self, snapshot: &mut Snapshot) -> Result<(), ReportError> {
        let user = self.field("user")?;
        if user.is_empty() {
            return Err(self.error("user", "is empty"));
        }
        if user == ROOT {
            snapshot.root = Some(Root {
                mfa_active: self.flag("mfa_active")?,
                access_keys_active: [
                    self.flag("access_key_1_active")?,
                    self.flag("access_key_2_active")?,
                ],
            });
            return Ok(());
        }
        let created = self
            .date("user_creation_time")?
            .ok_or_else(|| self.error("user_creation_time", "is missing"))?;
        snapshot.users.push(User {
            name: user.to_string(),
            created,
            password_last_used: self.date("password_last_used")?,
            mfa_active: Some(self.flag("mfa_active")?),
        });
        for (slot, active, rotated, used, region, service) in [
            (
                "key_1",
                "access_key_1_active",
                "access_key_1_last_rotated",
                "access_key_1_last_used_date",
                "access_key_1_last_used_region",
                "access_key_1_last_used_service",
            ),
            (
                "key_2",
                "access_key_2_active",
                "access_key_2_last_rotated",
                "access_key_2_last_used_date",
                "access_key_2_last_used_region",
                "access_key_2_last_used_service",
            ),
        ] {
            // An empty slot has no rotation date; an Inactive key still has one.
            let Some(created) = self.date(rotated)? else {
                continue;
            };
            let last_used = match self.date(used)? {
                Some(at) => Some(LastUse {
                    at,
                    service: self.text(service)?,
                    region: self.text(region)?,
                }),
                None => None,
            };
            snapshot.keys.push(AccessKey {
                user: user.to_string(),
                id: slot.to_string(),
                active: self.flag(active)?,
                created,
                last_used,
            });
        }
        Ok(())
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` into Unix seconds.
pub fn parse_date(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut fraction = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        fraction = format!("0.{}", &r[..digits]).parse().ok()?;
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let (h, m): (i64, i64) = (rest[1..3].parse().ok()?, rest[4..6].parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some((days * 86400 + hour * 3600 + minute * 60 + second - offset) as f64 + fraction)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_aws_date_forms() {
        assert_eq!(parse_date("1970-01-01T00:00:00+00:00"), Some(0.0));
        assert_eq!(parse_date("2024-02-29T12:30:15Z"), Some(1709209815.0));
        assert_eq!(parse_date("2024-02-29T14:30:15+02:00"), Some(1709209815.0));
        assert_eq!(parse_date("2026-11-26T17:10:07.25Z"), Some(1795713007.25));
        for bad in [
            "N/A",
            "2024-13-01T00:00:00Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00+0000",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}
