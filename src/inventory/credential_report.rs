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

use crate::inventory::{
    AccessKey, Certificate, Console, KeyStatus, LastUse, Root, Snapshot, Timestamp, User,
};

/// What is wrong with a report, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ReportError(pub String);

const ROOT: &str = "<root_account>";

/// Columns the exporter reads; the report may have more.
const REQUIRED: &[&str] = &[
    "user",
    "arn",
    "user_creation_time",
    "password_enabled",
    "password_last_used",
    "password_last_changed",
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
    "cert_1_active",
    "cert_1_last_rotated",
    "cert_2_active",
    "cert_2_last_rotated",
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

    /// The user's IAM path, from its ARN (`arn:aws:iam::1:user/team/alice` → `/team/`).
    fn path(&self) -> Result<String, ReportError> {
        let arn = self.field("arn")?;
        let resource = arn.splitn(6, ':').nth(5).unwrap_or("");
        let Some(name_and_path) = resource.strip_prefix("user/") else {
            return Err(self.error("arn", &format!("expected a user ARN, found {arn:?}")));
        };
        Ok(match name_and_path.rfind('/') {
            Some(i) => format!("/{}/", &name_and_path[..i]),
            None => "/".to_string(),
        })
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
        let certificate = |active, rotated| -> Result<Option<Certificate>, ReportError> {
            Ok(match self.date(rotated)? {
                Some(last_rotated) => Some(Certificate {
                    active: self.flag(active)?,
                    last_rotated,
                }),
                None => None,
            })
        };
        snapshot.users.push(User {
            name: user.to_string(),
            created,
            password_last_used: self.date("password_last_used")?,
            path: Some(self.path()?),
            tags: Default::default(),
            console: Some(Console {
                password_enabled: self.flag("password_enabled")?,
                password_last_changed: self.date("password_last_changed")?,
                mfa_active: self.flag("mfa_active")?,
                certificates: [
                    certificate("cert_1_active", "cert_1_last_rotated")?,
                    certificate("cert_2_active", "cert_2_last_rotated")?,
                ],
            }),
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
                status: if self.flag(active)? {
                    KeyStatus::Active
                } else {
                    KeyStatus::Inactive
                },
                created,
                last_used,
            });
        }
        Ok(())
    }
}

/// Parses an RFC 3339 date (`2024-02-29T12:30:15+00:00`, `...Z`, fractions allowed) into
/// Unix seconds, with the calendar checked (no February 31st).
pub fn parse_date(s: &str) -> Option<Timestamp> {
    use aws_smithy_types::date_time::{DateTime, Format};
    DateTime::from_str(s, Format::DateTimeWithOffset)
        .ok()
        .map(|d| d.as_secs_f64())
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
            "2024-02-31T00:00:00Z",
            "2023-02-29T00:00:00+00:00",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}
