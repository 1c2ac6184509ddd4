//! `iam-key-exporter audit`: every account read once, its findings printed for a person (a
//! table per account) or for tooling (JSON, CSV). Findings follow the configured policy,
//! each with the deadline that passed, the rule that set it and the compliance controls it
//! fails; keys within the policy's notice of a deadline are listed apart as "due soon", and
//! exempt findings apart with their reason and end date.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::config::Limits;
use crate::inventory::{self, date, AccountState, Standards, Timestamp};
use crate::policy;
use crate::report::findings::{self, Finding, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Exit codes: every account read and nothing found; something found; an account (or the
/// discovery) could not be read, so the audit is incomplete. Keys due soon and exempt
/// findings do not count as found.
pub const CLEAN: u8 = 0;
pub const INCOMPLETE: u8 = 1;
pub const FOUND: u8 = 3;

/// One account's outcome and findings.
struct Audited<'a> {
    state: &'a AccountState,
    findings: Vec<Finding>,
}

/// Where a finding is listed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Open,
    DueSoon,
    Exempt,
}

fn part(f: &Finding) -> Part {
    if f.exemption.is_some() {
        Part::Exempt
    } else if f.kind.is_notice() {
        Part::DueSoon
    } else {
        Part::Open
    }
}

/// Writes the audit of `accounts` to `out`; returns the exit code.
pub fn write(
    out: &mut dyn Write,
    format: Format,
    accounts: &[Arc<AccountState>],
    standards: &Standards,
    discovery_error: Option<&str>,
    now: Timestamp,
) -> io::Result<u8> {
    let audited: Vec<Audited> = accounts
        .iter()
        .map(|s| Audited {
            state: s,
            findings: findings::of_account(s, standards, now),
        })
        .collect();
    match format {
        Format::Table => table(out, &audited, standards, discovery_error)?,
        Format::Json => json(out, &audited, standards, discovery_error)?,
        Format::Csv => csv(out, &audited)?,
    }
    let failed = discovery_error.is_some() || audited.iter().any(|a| !a.state.up);
    let found = audited
        .iter()
        .flat_map(|a| &a.findings)
        .any(|f| part(f) == Part::Open);
    Ok(if failed {
        INCOMPLETE
    } else if found {
        FOUND
    } else {
        CLEAN
    })
}

fn key(f: &Finding) -> &str {
    f.credential_id.as_deref().unwrap_or("")
}

fn days(f: &Finding) -> String {
    f.days.map(|d| d.to_string()).unwrap_or_default()
}

fn error_text(s: &AccountState) -> String {
    s.last_error
        .as_ref()
        .map_or_else(|| "not read".to_string(), |e| e.to_string())
}

fn whole_days(d: Duration) -> u64 {
    inventory::whole_days(d.as_secs_f64())
}

fn deadline(f: &Finding) -> String {
    f.deadline
        .as_ref()
        .map(|(t, _)| date(*t))
        .unwrap_or_default()
}

fn rule(f: &Finding) -> &str {
    f.deadline.as_ref().map_or("", |(_, r)| r.as_str())
}

/// A finding's columns in the table (and the header's, in the same widths).
fn columns([kind, user, key, days, deadline, rule]: [&str; 6]) -> String {
    format!("  {kind:<26} {user:<24} {key:<22} {days:>5}  {deadline:<10}  {rule}")
}

/// What the table and the CSV both show of a finding: kind, user, key, days, deadline, rule.
fn cells(f: &Finding) -> [String; 6] {
    [
        f.kind.name().to_string(),
        f.user.clone(),
        key(f).to_string(),
        days(f),
        deadline(f),
        rule(f).to_string(),
    ]
}

fn finding_columns(f: &Finding) -> String {
    columns(cells(f).each_ref().map(String::as_str))
}

fn table(
    out: &mut dyn Write,
    audited: &[Audited],
    standards: &Standards,
    discovery_error: Option<&str>,
) -> io::Result<()> {
    // The policy as `check-config` prints it.
    write!(out, "{}", policy::summary(&standards.policy))?;
    writeln!(
        out,
        "Also: users with two active keys, root keys, missing MFA; service-specific credentials \
         and SSH keys by key_max_age, Bedrock API keys that never expire or outlive it; roles \
         by role_max_idle."
    )?;
    if let Some(e) = discovery_error {
        writeln!(out, "\nDiscovery FAILED: {e}")?;
    }
    for a in audited {
        let account = &a.state.account;
        write!(out, "\nAccount {} ({}): ", account.id, account.name)?;
        if !a.state.up {
            writeln!(out, "FAILED: {}", error_text(a.state))?;
            continue;
        }
        let of = |p: Part| a.findings.iter().filter(move |f| part(f) == p);
        match of(Part::Open).count() {
            0 => writeln!(out, "no findings")?,
            1 => writeln!(out, "1 finding")?,
            n => writeln!(out, "{n} findings")?,
        }
        if of(Part::Open).next().is_some() {
            let header = columns([
                "FINDING",
                "USER OR ROLE",
                "KEY OR CREDENTIAL",
                "DAYS",
                "DEADLINE",
                "RULE",
            ]);
            writeln!(out, "{}", header.trim_end())?;
            for f in of(Part::Open) {
                writeln!(out, "{}", finding_columns(f).trim_end())?;
            }
        }
        if of(Part::DueSoon).next().is_some() {
            writeln!(out, "  due soon:")?;
            for f in of(Part::DueSoon) {
                writeln!(out, "{}", finding_columns(f).trim_end())?;
            }
        }
        if of(Part::Exempt).next().is_some() {
            writeln!(out, "  exempt:")?;
            for f in of(Part::Exempt) {
                let e = f.exemption.as_ref().expect("partitioned on it");
                writeln!(
                    out,
                    "{}  until {} ({}: {})",
                    finding_columns(f),
                    e.until_date(),
                    e.origin.label(),
                    e.reason
                )?;
            }
        }
    }
    let failed = audited.iter().filter(|a| !a.state.up).count();
    let all: Vec<&Finding> = audited.iter().flat_map(|a| &a.findings).collect();
    let count = |p: Part| all.iter().filter(|f| part(f) == p).count();
    writeln!(
        out,
        "\n{} accounts, {failed} not read; {} findings, {} due soon, {} more exempt.",
        audited.len(),
        count(Part::Open),
        count(Part::DueSoon),
        count(Part::Exempt)
    )?;
    let mut kinds: Vec<Kind> = all.iter().map(|f| f.kind).collect();
    kinds.sort();
    kinds.dedup();
    if !kinds.is_empty() {
        writeln!(out, "\nControls:")?;
        for k in kinds {
            let controls = match k.controls_text() {
                t if t.is_empty() => "none named by a benchmark yet".to_string(),
                t => t,
            };
            writeln!(out, "  {:<26} {controls}", k.name())?;
        }
    }
    Ok(())
}

fn finding_json(a: &Audited, f: &Finding) -> serde_json::Value {
    let mut v = json!({
        "account_id": a.state.account.id,
        "account_name": a.state.account.name,
        "kind": f.kind.name(),
        "days": f.days,
        "controls": f.kind.controls().iter().map(|c| json!({"framework": c.framework, "id": c.id})).collect::<Vec<_>>(),
    });
    // Role findings name the role; credential findings the access key's or credential's id
    // under its own name.
    if f.kind.is_role() {
        v["role"] = json!(f.user);
    } else {
        v["user"] = json!(f.user);
        let id = if f.kind.is_other_credential() {
            "credential_id"
        } else {
            "access_key_id"
        };
        v[id] = json!(f.credential_id);
    }
    if let Some((t, rule)) = &f.deadline {
        v["deadline"] = json!(date(*t));
        v["rule"] = json!(rule);
    }
    if let Some(e) = &f.exemption {
        v["exempt_until"] = json!(e.until_date());
        v["exempt_reason"] = json!(e.reason);
        v["exempt_by"] = json!(e.origin.label());
    }
    v
}

fn limits_json(l: &Limits) -> serde_json::Value {
    json!({
        "key_max_age_days": whole_days(l.key_max_age),
        "key_max_idle_days": whole_days(l.key_max_idle),
        "password_max_idle_days": whole_days(l.password_max_idle),
        "notice_days": whole_days(l.notice),
    })
}

fn json(
    out: &mut dyn Write,
    audited: &[Audited],
    standards: &Standards,
    discovery_error: Option<&str>,
) -> io::Result<()> {
    let accounts: Vec<_> = audited
        .iter()
        .map(|a| {
            json!({
                "account_id": a.state.account.id,
                "account_name": a.state.account.name,
                "read": a.state.up,
                "error": (!a.state.up).then(|| error_text(a.state)),
            })
        })
        .collect();
    let pick = |p: Part| -> Vec<serde_json::Value> {
        audited
            .iter()
            .flat_map(|a| a.findings.iter().map(move |f| (a, f)))
            .filter(|(_, f)| part(f) == p)
            .map(|(a, f)| finding_json(a, f))
            .collect()
    };
    let policy = &standards.policy;
    let doc = json!({
        "policy": {
            "defaults": limits_json(&policy.defaults),
            "rules": policy.rules.iter().map(|r| {
                let mut v = limits_json(&r.limits);
                v["name"] = json!(r.name);
                v
            }).collect::<Vec<_>>(),
        },
        "discovery_error": discovery_error,
        "accounts": accounts,
        "findings": pick(Part::Open),
        "due_soon": pick(Part::DueSoon),
        "exempt": pick(Part::Exempt),
    });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

/// A CSV writer whose cells a spreadsheet will not run as formulas. User names, account names
/// and exemption reasons come from whoever may create a user, name an account or tag one, so
/// `=HYPERLINK(...)` must arrive as text: as OWASP advises, a cell that starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return gets a `'` in front. JSON keeps the values as they are.
struct SpreadsheetSafe<W: Write>(::csv::Writer<W>);

impl<W: Write> SpreadsheetSafe<W> {
    fn write_record<I, T>(&mut self, record: I) -> ::csv::Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.0.write_record(record.into_iter().map(|cell| {
            let cell = cell.as_ref();
            if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                format!("'{cell}")
            } else {
                cell.to_string()
            }
        }))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn csv(out: &mut dyn Write, audited: &[Audited]) -> io::Result<()> {
    let mut w = SpreadsheetSafe(::csv::Writer::from_writer(out));
    w.write_record([
        "account_id",
        "account_name",
        "kind",
        "user",
        "credential_id",
        "days",
        "deadline",
        "rule",
        "controls",
        "exempt_until",
        "exempt_reason",
        "error",
    ])?;
    for a in audited {
        let account = &a.state.account;
        if !a.state.up {
            let error = error_text(a.state);
            w.write_record([
                &account.id,
                &account.name,
                "not_read",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                &error,
            ])?;
            continue;
        }
        for f in &a.findings {
            let (until, reason) = f
                .exemption
                .as_ref()
                .map_or((String::new(), String::new()), |e| {
                    (e.until_date(), e.reason.clone())
                });
            let account_cells = [account.id.clone(), account.name.clone()];
            let rest = [f.kind.controls_text(), until, reason, String::new()];
            w.write_record(account_cells.iter().chain(&cells(f)).chain(&rest))?;
        }
    }
    w.flush()
}
