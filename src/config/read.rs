//! The configuration file, field by field: types, bounds, defaults, and the checks that span
//! fields. Every problem is recorded with its position and reading goes on, so one run
//! reports them all.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use super::tree;
use super::values;
use super::yaml::{human, Map, Problems, Value};
use super::*;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// Bounds: wide enough for any sane setup (and for tests that refresh every second), narrow
/// enough that a typo such as `10ms` or `1y` is caught instead of hammering IAM or never
/// refreshing.
const REFRESH_INTERVAL: RangeInclusive<Duration> = secs(1)..=secs(DAY);
const REFRESH_TIMEOUT: RangeInclusive<Duration> = secs(1)..=secs(DAY);
const MAX_STALENESS: RangeInclusive<Duration> = secs(1)..=secs(30 * DAY);
/// What STS accepts as DurationSeconds.
const SESSION_DURATION: RangeInclusive<Duration> = secs(900)..=secs(12 * HOUR);
const RENEW_BEFORE: RangeInclusive<Duration> = secs(1)..=secs(6 * HOUR);
const CONNECT_TIMEOUT: RangeInclusive<Duration> = millis(100)..=secs(60);
const ATTEMPT_TIMEOUT: RangeInclusive<Duration> = secs(1)..=secs(600);
const OPERATION_TIMEOUT: RangeInclusive<Duration> = secs(1)..=secs(HOUR);
const MAX_BACKOFF: RangeInclusive<Duration> = millis(100)..=secs(300);
const REPORT_TIMEOUT: RangeInclusive<Duration> = secs(1)..=secs(HOUR);
const SLOW_READ: RangeInclusive<Duration> = secs(1)..=secs(7 * DAY);
/// Organizations throttles hard; re-discovering more often than this only costs calls.
const DISCOVERY_INTERVAL: RangeInclusive<Duration> = secs(5)..=secs(7 * DAY);
const CONCURRENCY: RangeInclusive<u32> = 1..=1024;
const MAX_ATTEMPTS: RangeInclusive<u32> = 1..=20;
const REQUESTS_PER_ACCOUNT: RangeInclusive<u32> = 1..=64;
const REQUESTS_PER_SECOND: RangeInclusive<u32> = 1..=1000;
/// 1 applies every discovery at once; more than a few dozen hours-long discoveries in a row
/// would keep a real reorganisation out for days.
const CONFIRMATIONS: RangeInclusive<u32> = 1..=100;

/// Parses `text` as YAML and hands the top-level node to `read`; any problem it records, or
/// a YAML error, makes the whole file an error.
pub(crate) fn document<T>(
    text: &str,
    path: &Path,
    read: impl FnOnce(Value, &mut Problems) -> Option<T>,
) -> Result<T, ConfigError> {
    let root = tree::parse(text).map_err(|(at, message)| ConfigError::Syntax {
        path: path.to_path_buf(),
        at,
        message,
    })?;
    let mut problems = Problems::default();
    let value = read(Value::root(&root), &mut problems);
    match value {
        Some(v) if problems.0.is_empty() => Ok(v),
        _ => {
            let mut problems = problems.0;
            problems.sort_by_key(|p| p.at);
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }
}

/// A setting as read: its value (None if it was invalid, already reported) and where it was
/// written (None if it was left to its default).
struct Setting<T> {
    value: Option<T>,
    at: Option<Pos>,
}

impl<T: Copy> Setting<T> {
    fn get(&self) -> Option<T> {
        self.value
    }
}

fn setting<T>(
    map: &mut Map,
    key: &'static str,
    default: T,
    p: &mut Problems,
    read: impl FnOnce(&Value, &mut Problems) -> Option<T>,
) -> Setting<T> {
    match map.get(key) {
        None => Setting {
            value: Some(default),
            at: None,
        },
        Some(v) => Setting {
            value: read(&v, p),
            at: Some(v.pos()),
        },
    }
}

fn duration(
    map: &mut Map,
    key: &'static str,
    default: Duration,
    range: RangeInclusive<Duration>,
    p: &mut Problems,
) -> Setting<Duration> {
    setting(map, key, default, p, |v, p| v.duration(range, p))
}

fn number(
    map: &mut Map,
    key: &'static str,
    default: u32,
    range: RangeInclusive<u32>,
    p: &mut Problems,
) -> Setting<u32> {
    setting(map, key, default, p, |v, p| v.number(range, p))
}

/// Reports `message` at the first of `settings` written in the file, unless all are
/// defaults (the defaults are consistent) or one was invalid (already reported).
fn cross_check(p: &mut Problems, at: &[(Option<Pos>, &str)], ok: Option<bool>, message: String) {
    if ok != Some(false) {
        return;
    }
    if let Some((Some(pos), field)) = at.iter().find(|(pos, _)| pos.is_some()) {
        p.add(*pos, field, message);
    }
}

/// The whole configuration file.
pub(super) fn config(root: Value, p: &mut Problems) -> Option<Config> {
    let mut top = root.map(p)?;
    let refresh_interval = duration(&mut top, "refresh_interval", secs(900), REFRESH_INTERVAL, p);
    let refresh_timeout = duration(&mut top, "refresh_timeout", secs(600), REFRESH_TIMEOUT, p);
    let concurrency = number(&mut top, "concurrency", 8, CONCURRENCY, p);
    let max_staleness = duration(&mut top, "max_staleness", secs(2 * HOUR), MAX_STALENESS, p);
    let source = setting(&mut top, "source", Source::Api, p, |v, p| {
        v.parse(p, Source::parse)
    });
    let sts = sts(section(&mut top, "sts", p), p);
    let aws = aws(section(&mut top, "aws", p), p);
    let mut defaults = section(&mut top, "defaults", p);
    let role_name = defaults
        .get("role_name")
        .and_then(|v| v.parse(p, values::role_name));
    let external_id = defaults
        .get("external_id")
        .and_then(|v| v.parse(p, values::external_id));
    defaults.finish(p);
    let user_tags = user_tags(&mut top, p).unwrap_or_default();
    let read = read_settings(&mut top, p);
    let mut warnings = Problems::default();
    let exemptions = exemptions(section(&mut top, "exemptions", p), p, &mut warnings);
    let policy = super::policy::policy(top.get("policy"), p, &mut warnings);
    let accounts_at = top.get("accounts").map(|v| (v.pos(), v.list(p)));
    let discovery = top.get("discovery").and_then(|v| discovery(&v, p));
    top.finish(p);

    let listed = matches!(&accounts_at, Some((_, Some(items))) if !items.is_empty());
    let accounts = match &accounts_at {
        Some((_, Some(items))) => read_accounts(items, p),
        _ => Vec::new(),
    };
    if !listed && discovery.is_none() && !matches!(accounts_at, Some((_, None))) {
        let at = accounts_at
            .as_ref()
            .map_or(Pos { line: 1, column: 1 }, |(at, _)| *at);
        p.add(
            at,
            "accounts",
            "no account to read: list at least one account, or configure discovery.organizations",
        );
    }

    let timing = Timing {
        refresh_interval: &refresh_interval,
        refresh_timeout: &refresh_timeout,
        max_staleness: &max_staleness,
    };
    timing.check(&sts, &aws, p, &mut warnings);
    if let Some(d) = &discovery {
        check_against_discovery(&accounts, d, p);
    }

    Some(Config {
        refresh_interval: refresh_interval.value?,
        refresh_timeout: refresh_timeout.value?,
        concurrency: concurrency.value? as usize,
        max_staleness: max_staleness.value?,
        sts: Sts {
            region: sts.region?,
            session_name: sts.session_name?,
            session_duration: sts.session_duration.value?,
            renew_before: sts.renew_before.value?,
        },
        aws: AwsClient {
            connect_timeout: aws.connect_timeout.value?,
            attempt_timeout: aws.attempt_timeout.value?,
            operation_timeout: aws.operation_timeout.value?,
            max_attempts: aws.max_attempts.value?,
            max_backoff: aws.max_backoff.value?,
            requests_per_account: aws.requests_per_account.value? as usize,
            requests_per_second: f64::from(aws.requests_per_second.value?),
            credential_report_timeout: aws.credential_report_timeout.value?,
        },
        defaults: Defaults {
            role_name: role_name.unwrap_or_else(|| "IAMKeyExporterReadOnly".into()),
            external_id,
            source: source.value?,
        },
        accounts: accounts.into_iter().map(|(entry, _)| entry).collect(),
        discovery: discovery.map(|(d, _)| d),
        user_tags,
        exemptions,
        policy,
        read,
        warnings: warnings.0,
    })
}

/// The mapping under `key`, or an empty one when it is absent or not a mapping (reported).
fn section<'a>(top: &mut Map<'a>, key: &'static str, p: &mut Problems) -> Map<'a> {
    top.get(key)
        .and_then(|v| v.map(p))
        .unwrap_or_else(Map::empty)
}

fn opt_human(d: Option<Duration>) -> String {
    d.map_or_else(|| "?".into(), human)
}

/// The durations whose relations the file must keep.
struct Timing<'a> {
    refresh_interval: &'a Setting<Duration>,
    refresh_timeout: &'a Setting<Duration>,
    max_staleness: &'a Setting<Duration>,
}

impl Timing<'_> {
    /// The checks that span fields: an error where the setting would lose data, a warning
    /// where it only has no effect.
    fn check(
        &self,
        sts: &StsSettings,
        aws: &AwsSettings,
        p: &mut Problems,
        warnings: &mut Problems,
    ) {
        let gap = self
            .refresh_interval
            .get()
            .map(|d| d.mul_f64(1.0 + REFRESH_JITTER));
        let staleness_floor = gap.zip(self.refresh_timeout.get()).map(|(g, t)| g + t);
        cross_check(
            p,
            &[
                (self.max_staleness.at, "max_staleness"),
                (self.refresh_interval.at, "refresh_interval"),
                (self.refresh_timeout.at, "refresh_timeout"),
            ],
            self.max_staleness
                .get()
                .zip(staleness_floor)
                .map(|(m, f)| m >= f),
            format!(
                "max_staleness ({}) is shorter than the longest time between two refreshes of an \
                 account, refresh_interval + 10% jitter + refresh_timeout ({}): one failed refresh \
                 would drop the account's series and reset every alert on them; raise max_staleness",
                opt_human(self.max_staleness.get()),
                opt_human(staleness_floor)
            ),
        );
        // Settings that only have no effect are warnings: the refresh deadline wins anyway.
        let (operation, report) = (&aws.operation_timeout, &aws.credential_report_timeout);
        cross_check(
            warnings,
            &[
                (operation.at, "aws.operation_timeout"),
                (self.refresh_timeout.at, "refresh_timeout"),
            ],
            operation
                .get()
                .zip(self.refresh_timeout.get())
                .map(|(o, r)| o <= r),
            format!(
                "aws.operation_timeout ({}) is longer than refresh_timeout ({}): a single call could \
                 outlive the whole refresh, which refresh_timeout cuts short anyway",
                opt_human(operation.get()),
                opt_human(self.refresh_timeout.get())
            ),
        );
        cross_check(
            warnings,
            &[
                (report.at, "aws.credential_report_timeout"),
                (self.refresh_timeout.at, "refresh_timeout"),
            ],
            report
                .get()
                .zip(self.refresh_timeout.get())
                .map(|(c, r)| c < r),
            format!(
                "aws.credential_report_timeout ({}) must be shorter than refresh_timeout ({}), or \
                 the refresh is abandoned before the report's own timeout can say why",
                opt_human(report.get()),
                opt_human(self.refresh_timeout.get())
            ),
        );
        let renew_floor = gap.zip(sts.renew_before.get()).map(|(g, r)| g + r);
        cross_check(
            warnings,
            &[
                (sts.session_duration.at, "sts.session_duration"),
                (self.refresh_interval.at, "refresh_interval"),
                (sts.renew_before.at, "sts.renew_before"),
            ],
            sts.session_duration
                .get()
                .zip(renew_floor)
                .map(|(s, f)| s > f),
            format!(
                "sessions of {} do not last from one refresh to the next (refresh_interval + 10% \
                 jitter + sts.renew_before = {}), so every refresh assumes the role again: one \
                 extra STS call per account and refresh. Raise sts.session_duration (up to the \
                 role's MaxSessionDuration) if that matters",
                opt_human(sts.session_duration.get()),
                opt_human(renew_floor)
            ),
        );
    }
}

struct StsSettings {
    region: Option<String>,
    session_name: Option<String>,
    session_duration: Setting<Duration>,
    renew_before: Setting<Duration>,
}

fn sts(mut m: Map, p: &mut Problems) -> StsSettings {
    let region = m
        .get("region")
        .map_or(Some("us-east-1".into()), |v| v.parse(p, values::region));
    let session_name = m
        .get("session_name")
        .map_or(Some("iam-key-exporter".into()), |v| {
            v.parse(p, values::session_name)
        });
    let session_duration = duration(&mut m, "session_duration", secs(HOUR), SESSION_DURATION, p);
    let renew_before = duration(&mut m, "renew_before", secs(300), RENEW_BEFORE, p);
    let ok = renew_before
        .get()
        .zip(session_duration.get())
        .map(|(r, s)| r < s);
    cross_check(
        p,
        &[
            (renew_before.at, "sts.renew_before"),
            (session_duration.at, "sts.session_duration"),
        ],
        ok,
        format!(
            "sts.renew_before ({}) must be shorter than sts.session_duration ({})",
            opt_human(renew_before.get()),
            opt_human(session_duration.get())
        ),
    );
    m.finish(p);
    StsSettings {
        region,
        session_name,
        session_duration,
        renew_before,
    }
}

struct AwsSettings {
    connect_timeout: Setting<Duration>,
    attempt_timeout: Setting<Duration>,
    operation_timeout: Setting<Duration>,
    max_attempts: Setting<u32>,
    max_backoff: Setting<Duration>,
    requests_per_account: Setting<u32>,
    requests_per_second: Setting<u32>,
    credential_report_timeout: Setting<Duration>,
}

fn aws(mut map: Map, p: &mut Problems) -> AwsSettings {
    let m = &mut map;
    let s = AwsSettings {
        connect_timeout: duration(m, "connect_timeout", secs(3), CONNECT_TIMEOUT, p),
        attempt_timeout: duration(m, "attempt_timeout", secs(20), ATTEMPT_TIMEOUT, p),
        operation_timeout: duration(m, "operation_timeout", secs(90), OPERATION_TIMEOUT, p),
        max_attempts: number(m, "max_attempts", 6, MAX_ATTEMPTS, p),
        max_backoff: duration(m, "max_backoff", secs(20), MAX_BACKOFF, p),
        requests_per_account: number(m, "requests_per_account", 4, REQUESTS_PER_ACCOUNT, p),
        requests_per_second: number(m, "requests_per_second", 50, REQUESTS_PER_SECOND, p),
        credential_report_timeout: duration(
            m,
            "credential_report_timeout",
            secs(300),
            REPORT_TIMEOUT,
            p,
        ),
    };
    let ordered = [
        (&s.connect_timeout, "aws.connect_timeout"),
        (&s.attempt_timeout, "aws.attempt_timeout"),
        (&s.operation_timeout, "aws.operation_timeout"),
    ];
    for pair in ordered.windows(2) {
        let [(short, short_name), (long, long_name)] = pair else {
            continue;
        };
        cross_check(
            p,
            &[(short.at, short_name), (long.at, long_name)],
            short.get().zip(long.get()).map(|(s, l)| s <= l),
            format!(
                "{short_name} ({}) must not be longer than {long_name} ({})",
                opt_human(short.get()),
                opt_human(long.get())
            ),
        );
    }
    map.finish(p);
    s
}

/// An entry of `accounts:` with the positions later checks point at.
struct EntryPos {
    id: Pos,
    name: Pos,
    labels: Vec<(String, Pos)>,
}

fn read_accounts(items: &[Value], p: &mut Problems) -> Vec<(AccountEntry, EntryPos)> {
    let mut out = Vec::with_capacity(items.len());
    let mut ids: HashMap<String, (usize, Pos)> = HashMap::with_capacity(items.len());
    let mut names: HashMap<String, (usize, Pos)> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(mut m) = item.map(p) else { continue };
        let Some((entry, at)) = account(&mut m, p) else {
            m.finish(p);
            continue;
        };
        m.finish(p);
        if let Some((j, first)) = ids.get(&entry.id) {
            p.add(
                at.id,
                &format!("accounts[{i}].id"),
                format!(
                    "account id {:?} is listed twice (also accounts[{j}], line {})",
                    entry.id, first.line
                ),
            );
            continue;
        }
        ids.insert(entry.id.clone(), (i, at.id));
        let name = entry.name.clone().unwrap_or_else(|| entry.id.clone());
        if let Some((j, first)) = names.get(&name) {
            p.add(
                at.name,
                &format!("accounts[{i}].name"),
                format!(
                    "account name {name:?} is used twice (also accounts[{j}], line {})",
                    first.line
                ),
            );
            continue;
        }
        names.insert(name, (i, at.name));
        out.push((entry, at));
    }
    out
}

fn account(m: &mut Map, p: &mut Problems) -> Option<(AccountEntry, EntryPos)> {
    let path = m.path().to_string();
    let id_value = m.get("id");
    let id = match &id_value {
        None => {
            p.add(
                m.pos(),
                &format!("{path}.id"),
                "missing: every account needs its 12-digit id",
            );
            None
        }
        Some(v) => match v.scalar("a quoted 12-digit account id", p) {
            Some(s) if s.plain && s.text.bytes().all(|b| b.is_ascii_digit()) => {
                p.add(v.pos(), &v.path(), values::unquoted_account_id(&s.text));
                None
            }
            Some(_) => v.parse(p, values::account_id),
            None => None,
        },
    };
    let name_value = m.get("name");
    let name_at = name_value.as_ref().map(|v| v.pos());
    let name = name_value.and_then(|v| v.parse(p, non_empty("account name")));
    let role_arn = m
        .get("role_arn")
        .map(|v| (v.pos(), v.path(), v.parse(p, values::role_arn)));
    let role_name = m
        .get("role_name")
        .map(|v| (v.pos(), v.parse(p, values::role_name)));
    let external_id = m
        .get("external_id")
        .map(|v| (v.pos(), v.parse(p, values::external_id)));
    let source = m.get("source").map(|v| v.parse(p, Source::parse));
    let assume_role = m.get("assume_role").map(|v| (v.pos(), v.bool(p)));
    let user_tags = user_tags(m, p);
    let read = read_override(m, p);
    let labels = m
        .get("labels")
        .and_then(|v| v.entries(p))
        .unwrap_or_default();

    let mut label_map = BTreeMap::new();
    let mut label_pos = Vec::new();
    for (key, value) in labels {
        let Ok(name) = values::label_name(&key.text).map_err(|e| p.add(key.at, &value.path(), e))
        else {
            continue;
        };
        if let Some(v) = value.string(p) {
            label_pos.push((name.clone(), key.at));
            label_map.insert(name, v);
        }
    }

    let own_credentials = matches!(assume_role, Some((_, Some(false))));
    if own_credentials && (role_arn.is_some() || role_name.is_some() || external_id.is_some()) {
        let at = assume_role.as_ref().map_or(m.pos(), |(at, _)| *at);
        p.add(
            at,
            &format!("{path}.assume_role"),
            "assume_role is false, so role_arn, role_name and external_id would be ignored; \
             remove them or this line",
        );
    }
    let role = match (&role_arn, &role_name) {
        (Some(_), Some((at, _))) => {
            p.add(
                *at,
                &format!("{path}.role_name"),
                "set role_arn or role_name, not both",
            );
            None
        }
        _ if own_credentials => Some(RoleChoice::OwnCredentials),
        (Some((at, field, arn)), None) => {
            let arn = arn.clone()?;
            let id = id.as_deref()?;
            if values::arn_account(&arn) != id {
                p.add(
                    *at,
                    field,
                    format!("{arn:?} is in another account than id {id:?}"),
                );
                return None;
            }
            Some(RoleChoice::Arn(arn))
        }
        (None, Some((_, name))) => Some(RoleChoice::Name(name.clone()?)),
        (None, None) => Some(RoleChoice::Default),
    };
    let entry = AccountEntry {
        id: id?,
        name,
        source: source.flatten(),
        role: role?,
        external_id: external_id.and_then(|(_, e)| e),
        labels: label_map,
        user_tags,
        read,
    };
    let id_at = id_value.map_or(m.pos(), |v| v.pos());
    let at = EntryPos {
        id: id_at,
        name: name_at.unwrap_or(id_at),
        labels: label_pos,
    };
    Some((entry, at))
}

fn non_empty(what: &'static str) -> impl Fn(&str) -> Result<String, String> {
    move |s| {
        if s.trim().is_empty() {
            Err(format!("{what} must not be empty"))
        } else {
            Ok(s.to_string())
        }
    }
}

/// Positions of discovery settings that checks against `accounts:` point at.
struct DiscoveryPos {
    exclude_accounts: Vec<Pos>,
    tags: Vec<Pos>,
}

fn discovery(v: &Value, p: &mut Problems) -> Option<(Discovery, DiscoveryPos)> {
    let mut m = v.map(p)?;
    let orgs = m.get("organizations");
    m.finish(p);
    let Some(orgs) = orgs else {
        p.add(
            v.pos(),
            "discovery",
            "name where to discover accounts: organizations",
        );
        return None;
    };
    let mut m = orgs.map(p)?;
    let role_arn = m.get("role_arn").map(|v| v.parse(p, values::role_arn));
    let include_ous = ids(&mut m, "include_ous", values::ou_id, p);
    let exclude_ous = ids(&mut m, "exclude_ous", values::ou_id, p);
    let exclude_accounts = ids(&mut m, "exclude_accounts", values::account_id, p);
    let tags = m
        .get("tags_as_labels")
        .and_then(|v| v.list(p))
        .unwrap_or_default();
    let refresh_interval = duration(
        &mut m,
        "refresh_interval",
        secs(HOUR),
        DISCOVERY_INTERVAL,
        p,
    );
    let shrink_guard = shrink_guard(section(&mut m, "shrink_guard", p), p);
    m.finish(p);

    for (ou, at, path) in &exclude_ous {
        if include_ous.iter().any(|(i, _, _)| i == ou) {
            p.add(
                *at,
                path,
                format!("{ou} is in both include_ous and exclude_ous"),
            );
        }
    }
    let (tags_as_labels, tag_pos) = tag_labels(&tags, p);
    let discovery = Discovery {
        role_arn: role_arn.flatten(),
        include_ous: include_ous.into_iter().map(|(id, _, _)| id).collect(),
        exclude_ous: exclude_ous.into_iter().map(|(id, _, _)| id).collect(),
        exclude_accounts: exclude_accounts
            .iter()
            .map(|(id, _, _)| id.clone())
            .collect(),
        tags_as_labels,
        refresh_interval: refresh_interval.value?,
        shrink_guard: shrink_guard?,
    };
    let at = DiscoveryPos {
        exclude_accounts: exclude_accounts.into_iter().map(|(_, at, _)| at).collect(),
        tags: tag_pos,
    };
    Some((discovery, at))
}

/// `discovery.organizations.shrink_guard`: `{max_drop: 50%, confirmations: 3}`.
fn shrink_guard(mut m: Map, p: &mut Problems) -> Option<ShrinkGuard> {
    let default = ShrinkGuard::default();
    let max_drop = setting(&mut m, "max_drop", default.max_drop_percent, p, |v, p| {
        v.parse(p, percent)
    });
    let confirmations = number(
        &mut m,
        "confirmations",
        default.confirmations,
        CONFIRMATIONS,
        p,
    );
    m.finish(p);
    Some(ShrinkGuard {
        max_drop_percent: max_drop.value?,
        confirmations: confirmations.value?,
    })
}

/// A whole percentage from 0% to 100%.
fn percent(s: &str) -> Result<u32, String> {
    s.strip_suffix('%')
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n <= 100)
        .ok_or_else(|| format!("{s:?} is not a percentage from 0% to 100%, like 50%"))
}

/// Tag keys that become labels (`tag_<key>`), with the position of each; two keys that would
/// make the same label are an error.
fn tag_labels(items: &[Value], p: &mut Problems) -> (Vec<TagLabel>, Vec<Pos>) {
    let mut labels: Vec<TagLabel> = Vec::new();
    let mut at = Vec::new();
    for item in items {
        let Some(tag) = item.string(p) else { continue };
        let label = match values::tag_label(&tag) {
            Ok(l) => l,
            Err(e) => {
                p.add(item.pos(), &item.path(), e);
                continue;
            }
        };
        if let Some(other) = labels.iter().find(|t| t.label == label) {
            p.add(
                item.pos(),
                &item.path(),
                format!(
                    "tag {tag:?} and tag {:?} would both become label {label}; keep one",
                    other.tag
                ),
            );
            continue;
        }
        at.push(item.pos());
        labels.push(TagLabel { tag, label });
    }
    (labels, at)
}

/// The global `read:`: what is written over the defaults.
fn read_settings(top: &mut Map, p: &mut Problems) -> Read {
    let Some(mut r) = top.get("read").and_then(|v| v.map(p)) else {
        return Read::default();
    };
    let mut interval = |key| {
        duration(&mut r, key, SLOW_READ_INTERVAL, SLOW_READ, p)
            .value
            .unwrap_or(SLOW_READ_INTERVAL)
    };
    let roles_interval = interval("roles_interval");
    let ssh_public_keys_interval = interval("ssh_public_keys_interval");
    let fields = read_fields(&mut r, p);
    r.finish(p);
    Read {
        roles_interval,
        ssh_public_keys_interval,
        ..Read::default()
    }
    .with(fields)
}

/// An account's `read:`, the fields written.
fn read_override(m: &mut Map, p: &mut Problems) -> ReadOverride {
    let Some(mut r) = m.get("read").and_then(|v| v.map(p)) else {
        return ReadOverride::default();
    };
    let out = read_fields(&mut r, p);
    r.finish(p);
    out
}

fn read_fields(r: &mut Map, p: &mut Problems) -> ReadOverride {
    ReadOverride {
        service_credentials: r
            .get("service_specific_credentials")
            .and_then(|v| v.bool(p)),
        roles: r.get("roles").and_then(|v| v.bool(p)),
        ssh_public_keys: r.get("ssh_public_keys").and_then(|v| v.bool(p)),
    }
}

/// `user_tags_as_labels`, where it is written.
fn user_tags(m: &mut Map, p: &mut Problems) -> Option<Vec<TagLabel>> {
    let items = m.get("user_tags_as_labels")?.list(p)?;
    Some(tag_labels(&items, p).0)
}

/// `exemptions:`: the user tag that exempts (on by default) and the configured rules.
fn exemptions(mut m: Map, p: &mut Problems, warnings: &mut Problems) -> Exemptions {
    let tag = match m.get("tag") {
        None => Some(DEFAULT_EXEMPTION_TAG.to_string()),
        Some(v) => v.string(p).filter(|t| !t.is_empty()),
    };
    let mut rules = Vec::new();
    let list = m.get("rules");
    let at = list.as_ref().map(|v| v.pos());
    for item in list.and_then(|v| v.list(p)).unwrap_or_default() {
        let Some(mut r) = item.map(p) else { continue };
        let account = r.get("account").and_then(|v| v.parse(p, any_account));
        let user = r
            .required("user", p)
            .and_then(|v| v.parse(p, values::user_pattern));
        let access_key_id = r
            .get("access_key_id")
            .and_then(|v| v.parse(p, values::access_key_id));
        let reason = r
            .required("reason", p)
            .and_then(|v| v.parse(p, non_empty("reason")));
        let until = match r.get("until") {
            Some(v) => v.parse(p, values::until_date),
            None => {
                p.add(
                    r.pos(),
                    &format!("{}.until", r.path()),
                    "missing: every exemption needs an end date (until: 2027-03-31); \
                     an exemption without one would silence alerts forever",
                );
                None
            }
        };
        r.finish(p);
        if let (Some(account), Some(user), Some(reason), Some(until)) =
            (account.or(Some(None)), user, reason, until)
        {
            rules.push(ExemptionRule {
                account,
                user,
                access_key_id,
                reason,
                until,
            });
        }
    }
    m.finish(p);
    let patterns = rules.iter().filter(|r| r.is_pattern()).count();
    if let (Some(at), true) = (at, patterns > EXEMPTION_PATTERNS_WARN) {
        warnings.add(
            at,
            "exemptions.rules",
            format!(
                "{patterns} rules have a user pattern (* or ?): each is tried against every \
                 user on every scrape, about 1 s per 1,000 patterns and 100,000 keys, and \
                 Prometheus gives up on a scrape after 10 s by default. Past \
                 {EXEMPTION_PATTERNS_WARN} patterns, name the users instead (a plain user name \
                 costs nothing per rule)"
            ),
        );
    }
    Exemptions { tag, rules }
}

/// An account id, or `*` (None) for every account.
pub(super) fn any_account(s: &str) -> Result<Option<String>, String> {
    if s == "*" {
        Ok(None)
    } else {
        values::account_id(s).map(Some)
    }
}

/// An optional duration within `range`: None when absent or invalid (reported).
pub(super) fn duration_setting(
    m: &mut Map,
    key: &'static str,
    range: RangeInclusive<Duration>,
    p: &mut Problems,
) -> Option<Duration> {
    m.get(key).and_then(|v| v.duration(range, p))
}

/// A list of ids, each checked; with the position and path of each for later checks.
fn ids(
    m: &mut Map,
    key: &'static str,
    check: fn(&str) -> Result<String, String>,
    p: &mut Problems,
) -> Vec<(String, Pos, String)> {
    let items = m.get(key).and_then(|v| v.list(p)).unwrap_or_default();
    items
        .iter()
        .filter_map(|v| Some((v.parse(p, check)?, v.pos(), v.path())))
        .collect()
}

/// Static entries against discovery: an entry cannot be excluded, and its labels cannot
/// clash with the labels made from tags.
fn check_against_discovery(
    accounts: &[(AccountEntry, EntryPos)],
    (d, at): &(Discovery, DiscoveryPos),
    p: &mut Problems,
) {
    let listed: HashMap<&str, usize> = accounts
        .iter()
        .enumerate()
        .map(|(i, (a, _))| (a.id.as_str(), i))
        .collect();
    for (i, id) in d.exclude_accounts.iter().enumerate() {
        if let Some(j) = listed.get(id.as_str()) {
            p.add(
                at.exclude_accounts[i],
                &format!("discovery.organizations.exclude_accounts[{i}]"),
                format!("{id} is excluded here but listed in accounts[{j}]; remove one of them"),
            );
        }
    }
    let tag_labels: HashMap<&str, usize> = d
        .tags_as_labels
        .iter()
        .enumerate()
        .map(|(i, t)| (t.label.as_str(), i))
        .collect();
    for (i, (_, pos)) in accounts.iter().enumerate() {
        for (label, label_at) in &pos.labels {
            if let Some(t) = tag_labels.get(label.as_str()) {
                p.add(
                    *label_at,
                    &format!("accounts[{i}].labels.{label}"),
                    format!(
                        "label {label} is also made from the tag {:?} \
                         (discovery.organizations.tags_as_labels, line {}); rename one",
                        d.tags_as_labels[*t].tag, at.tags[*t].line
                    ),
                );
            }
        }
    }
}
