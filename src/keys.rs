//! The credential view: every access key, service-specific credential, SSH key and role of the
//! inventory, oldest first, with its owner (the user's tags named in `user_tags_as_labels`),
//! use, the policy rule and deadlines that apply to it, and exemption, filtered by account,
//! kind and status, one page at a time, as an HTML page with no external assets (`/keys`)
//! or as JSON (`/keys.json`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;

use serde_json::json;

use crate::exemptions::{self, Exemption};
use crate::inventory::{
    date, whole_days as days, AccessKey, AccountState, KeyStatus, Role, ServiceCredential, SshKey,
    Standards, Timestamp, User,
};
use crate::policy;

/// Rows on one page unless asked otherwise, and the most one page may hold.
const PAGE: usize = 500;
const MAX_PAGE: usize = 5000;

/// What the page shows: `?account=<id or name>&kind=access_key&status=Active&offset=0&limit=500`.
#[derive(Debug, Default, PartialEq)]
pub struct Query {
    pub account: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub offset: usize,
    pub limit: usize,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let mut q = Query {
            limit: PAGE,
            ..Query::default()
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v);
            match k {
                "account" if !v.is_empty() => q.account = Some(v),
                "kind" if !v.is_empty() => q.kind = Some(v),
                "status" if !v.is_empty() => q.status = Some(v),
                "offset" => q.offset = v.parse().unwrap_or(0),
                "limit" => q.limit = v.parse().unwrap_or(PAGE).clamp(1, MAX_PAGE),
                _ => {}
            }
        }
        q
    }

    fn link(&self, offset: usize, path: &str) -> String {
        let mut s = format!("{path}?offset={offset}&limit={}", self.limit);
        for (name, value) in [
            ("account", &self.account),
            ("kind", &self.kind),
            ("status", &self.status),
        ] {
            if let Some(v) = value {
                let _ = write!(s, "&{name}={}", encode(v));
            }
        }
        s
    }
}

/// One credential of the view.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    AccessKey(&'a AccessKey),
    Service(&'a ServiceCredential),
    Ssh(&'a SshKey),
    Role(&'a Role),
}

impl<'a> Credential<'a> {
    /// The `kind` filter's value and column.
    pub const KINDS: [&'static str; 4] =
        ["access_key", "service_credential", "ssh_public_key", "role"];

    fn kind(self) -> &'static str {
        match self {
            Credential::AccessKey(_) => "access_key",
            Credential::Service(_) => "service_credential",
            Credential::Ssh(_) => "ssh_public_key",
            Credential::Role(_) => "role",
        }
    }

    /// The IAM user it belongs to; none for a role.
    fn user(self) -> Option<&'a str> {
        match self {
            Credential::AccessKey(k) => Some(&k.user),
            Credential::Service(c) => Some(&c.user),
            Credential::Ssh(k) => Some(&k.user),
            Credential::Role(_) => None,
        }
    }

    /// The access key's or credential's id, or the role's name.
    fn id(self) -> &'a str {
        match self {
            Credential::AccessKey(k) => &k.id,
            Credential::Service(c) => &c.id,
            Credential::Ssh(k) => &k.id,
            Credential::Role(r) => &r.name,
        }
    }

    /// A role has no status.
    fn status(self) -> Option<&'a KeyStatus> {
        match self {
            Credential::AccessKey(k) => Some(&k.status),
            Credential::Service(c) => Some(&c.status),
            Credential::Ssh(k) => Some(&k.status),
            Credential::Role(_) => None,
        }
    }

    fn created(self) -> Timestamp {
        match self {
            Credential::AccessKey(k) => k.created,
            Credential::Service(c) => c.created,
            Credential::Ssh(k) => k.uploaded,
            Credential::Role(r) => r.created,
        }
    }

    /// Since when it has been idle; None where IAM records no use (service-specific
    /// credentials, SSH keys).
    fn idle_since(self) -> Option<Timestamp> {
        match self {
            Credential::AccessKey(k) => Some(k.idle_since()),
            Credential::Service(_) | Credential::Ssh(_) => None,
            Credential::Role(r) => Some(r.idle_since()),
        }
    }

    /// The last use: when, and the service and region where AWS says.
    fn last_used(self) -> Option<(Timestamp, Vec<&'a str>)> {
        match self {
            Credential::AccessKey(k) => k.last_used.as_ref().map(|u| {
                let place = [u.service.as_deref(), u.region.as_deref()];
                (u.at, place.into_iter().flatten().collect())
            }),
            Credential::Service(_) | Credential::Ssh(_) => None,
            Credential::Role(r) => r
                .last_used
                .as_ref()
                .map(|u| (u.at, u.region.as_deref().into_iter().collect())),
        }
    }

    fn is_active(self) -> bool {
        self.status() == Some(&KeyStatus::Active)
    }
}

/// One credential with what the view shows of it.
pub struct Row<'a> {
    pub state: &'a AccountState,
    pub credential: Credential<'a>,
    pub user: Option<&'a User>,
    pub exemption: Option<Exemption>,
    /// The policy rule that applies to the credential's user, or the role.
    pub rule: String,
    /// When it must be rotated (active keys and service-specific credentials).
    pub rotate_by: Option<Timestamp>,
    /// When, unless used, it must be disabled (active keys) or removed (roles the alert
    /// judges).
    pub disable_by: Option<Timestamp>,
}

/// Every credential of an account, in no particular order.
fn credentials(s: &AccountState) -> impl Iterator<Item = Credential<'_>> {
    s.snapshot.iter().flat_map(|snap| {
        let keys = snap.keys.iter().map(Credential::AccessKey);
        let service = snap.service_credentials.iter().flatten();
        let ssh = snap.ssh_keys.iter().flatten().map(Credential::Ssh);
        let roles = snap.roles.iter().flatten().map(Credential::Role);
        keys.chain(service.map(Credential::Service))
            .chain(ssh)
            .chain(roles)
    })
}

/// The page: the matching credentials' count and the rows of the page, oldest first.
pub fn page<'a>(
    accounts: &'a [Arc<AccountState>],
    standards: &Standards,
    q: &Query,
    now: Timestamp,
) -> (usize, Vec<Row<'a>>) {
    let mut found: Vec<(&AccountState, Credential)> = accounts
        .iter()
        .filter(|s| {
            q.account
                .as_deref()
                .is_none_or(|a| a == s.account.id || a == s.account.name)
        })
        .flat_map(|s| credentials(s).map(move |c| (&**s, c)))
        .filter(|(_, c)| q.kind.as_deref().is_none_or(|k| k == c.kind()))
        .filter(|(_, c)| {
            q.status
                .as_deref()
                .is_none_or(|st| c.status().is_some_and(|s| s.as_str() == st))
        })
        .collect();
    let total = found.len();
    found.sort_by(|a, b| {
        a.1.created()
            .total_cmp(&b.1.created())
            .then_with(|| (&a.0.account.id, a.1.id()).cmp(&(&b.0.account.id, b.1.id())))
    });
    let mut users: HashMap<(&str, &str), &User> = HashMap::new();
    let mut loaded: HashSet<&str> = HashSet::new();
    let rows = found
        .into_iter()
        .skip(q.offset)
        .take(q.limit)
        .map(|(state, credential)| {
            let account = state.account.id.as_str();
            if loaded.insert(account) {
                for u in state.snapshot.iter().flat_map(|s| &s.users) {
                    users.insert((account, u.name.as_str()), u);
                }
            }
            let user = credential
                .user()
                .and_then(|name| users.get(&(account, name)).copied());
            let exemption = user.and_then(|u| {
                let all = exemptions::of_user(&standards.exemptions, &state.account, u);
                exemptions::covering(&all, credential.id(), now).cloned()
            });
            let tags_known = state.snapshot.as_ref().is_some_and(|s| s.user_tags_read);
            let decision = match (credential, user) {
                (Credential::Role(r), _) => {
                    policy::decide_role(&standards.policy, &state.account, r)
                }
                (_, Some(u)) => policy::decide(&standards.policy, &state.account, u, tags_known),
                (_, None) => policy::defaults(&standards.policy),
            };
            let limits = decision.limits;
            let (rotate_by, disable_by) = match credential {
                Credential::AccessKey(k) if credential.is_active() => {
                    let d = policy::key_deadlines(k, limits);
                    (Some(d.rotate_by), Some(d.disable_by))
                }
                Credential::Service(c) if credential.is_active() => {
                    (Some(policy::rotate_by(c.created, limits)), None)
                }
                Credential::Ssh(k) if credential.is_active() => {
                    (Some(policy::rotate_by(k.uploaded, limits)), None)
                }
                Credential::Role(r) if r.judged() => (None, Some(policy::role_deadline(r, limits))),
                _ => (None, None),
            };
            Row {
                state,
                credential,
                user,
                exemption,
                rule: decision.rule.to_string(),
                rotate_by,
                disable_by,
            }
        })
        .collect();
    (total, rows)
}

/// The user's tags named in the account's `user_tags_as_labels`, as `key: value` pairs.
fn owner(row: &Row) -> Vec<(String, String)> {
    let Some(user) = row.user else {
        return Vec::new();
    };
    row.state
        .account
        .user_tags
        .iter()
        .filter_map(|t| Some((t.tag.clone(), user.tags.get(&t.tag)?.clone())))
        .collect()
}

pub fn json(total: usize, rows: &[Row], q: &Query, now: Timestamp) -> String {
    let items: Vec<_> = rows
        .iter()
        .map(|r| {
            let c = r.credential;
            let used = c.last_used();
            let mut v = json!({
                "kind": c.kind(),
                "account_id": r.state.account.id,
                "account_name": r.state.account.name,
                "id": c.id(),
                "status": c.status().map(KeyStatus::as_str),
                "owner": owner(r)
                    .into_iter()
                    .map(|(t, v)| (t, json!(v)))
                    .collect::<serde_json::Map<_, _>>(),
                "created": date(c.created()),
                "age_days": days(now - c.created()),
                "idle_days": c.idle_since().map(|t| days(now - t)),
                "policy_rule": r.rule,
                "rotate_by": r.rotate_by.map(date),
                "disable_by": r.disable_by.map(date),
                "last_used": used.as_ref().map(|(at, _)| date(*at)),
                "exempt_until": r.exemption.as_ref().map(Exemption::until_date),
                "exempt_reason": r.exemption.as_ref().map(|e| e.reason.clone()),
            });
            match c {
                Credential::AccessKey(k) => {
                    v["user"] = json!(k.user);
                    v["access_key_id"] = json!(k.id);
                    let u = k.last_used.as_ref();
                    v["last_used_service"] = json!(u.and_then(|u| u.service.clone()));
                    v["last_used_region"] = json!(u.and_then(|u| u.region.clone()));
                }
                Credential::Ssh(k) => v["user"] = json!(k.user),
                Credential::Service(s) => {
                    v["user"] = json!(s.user);
                    v["service"] = json!(s.service);
                    v["expires"] = json!(s.expires.map(date));
                }
                Credential::Role(role) => {
                    v["role"] = json!(role.name);
                    v["path"] = json!(role.path);
                    v["last_used_region"] =
                        json!(role.last_used.as_ref().and_then(|u| u.region.clone()));
                }
            }
            v
        })
        .collect();
    json!({"total": total, "offset": q.offset, "limit": q.limit, "keys": items}).to_string()
}

pub fn html(
    total: usize,
    rows: &[Row],
    q: &Query,
    accounts: &[Arc<AccountState>],
    now: Timestamp,
) -> String {
    let mut body = String::new();
    for r in rows {
        let c = r.credential;
        let idle = c
            .idle_since()
            .map_or(String::new(), |t| days(now - t).to_string());
        let last = match c.last_used() {
            Some((at, place)) => format!("{} {}", date(at), place.join(" ")),
            None if matches!(c, Credential::Service(_) | Credential::Ssh(_)) => {
                "not recorded by IAM".to_string()
            }
            None => "never".to_string(),
        };
        let expires = match c {
            Credential::Service(s) => s.expires.map_or("never".to_string(), date),
            _ => String::new(),
        };
        let what = match c {
            Credential::Service(s) => format!("{} ({})", c.id(), s.service),
            Credential::Role(r) => format!("{}{}", r.path, r.name),
            Credential::AccessKey(_) | Credential::Ssh(_) => c.id().to_string(),
        };
        let status = c.status().map_or("", KeyStatus::as_str);
        let owner: Vec<String> = owner(r)
            .into_iter()
            .map(|(t, v)| format!("{t}: {v}"))
            .collect();
        let exempt = r.exemption.as_ref().map_or(String::new(), |e| {
            format!("until {} ({})", e.until_date(), e.reason)
        });
        let _ = writeln!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.kind(),
            html_escape(&r.state.account.name),
            html_escape(c.user().unwrap_or("")),
            html_escape(&owner.join(", ")),
            html_escape(&what),
            html_escape(&status.to_lowercase()),
            html_escape(status),
            days(now - c.created()),
            idle,
            html_escape(&last),
            html_escape(&r.rule),
            r.rotate_by.map(date).unwrap_or_default(),
            r.disable_by.map(date).unwrap_or_default(),
            html_escape(&expires),
            html_escape(&exempt),
        );
    }
    let mut options = String::from("<option value=\"\">all accounts</option>");
    for s in accounts {
        let selected = q.account.as_deref() == Some(s.account.id.as_str());
        let _ = write!(
            options,
            "<option value=\"{}\"{}>{} ({})</option>",
            html_escape(&s.account.id),
            if selected { " selected" } else { "" },
            html_escape(&s.account.name),
            html_escape(&s.account.id)
        );
    }
    let mut kinds = String::from("<option value=\"\">every kind</option>");
    for k in Credential::KINDS {
        let selected = if q.kind.as_deref() == Some(k) {
            " selected"
        } else {
            ""
        };
        let _ = write!(kinds, "<option{selected}>{k}</option>");
    }
    let mut statuses = String::from("<option value=\"\">any status</option>");
    for st in ["Active", "Inactive", "Expired"] {
        let selected = if q.status.as_deref() == Some(st) {
            " selected"
        } else {
            ""
        };
        let _ = write!(statuses, "<option{selected}>{st}</option>");
    }
    let shown_to = (q.offset + rows.len()).min(total);
    let mut nav = format!(
        "Showing {} to {shown_to} of {total} credentials, oldest first.",
        if rows.is_empty() { 0 } else { q.offset + 1 }
    );
    if q.offset > 0 {
        let _ = write!(
            nav,
            " <a href=\"{}\">Previous</a>",
            html_escape(&q.link(q.offset.saturating_sub(q.limit), "/keys"))
        );
    }
    if shown_to < total {
        let _ = write!(
            nav,
            " <a href=\"{}\">Next</a>",
            html_escape(&q.link(shown_to, "/keys"))
        );
    }
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>IAM credentials</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{padding:.25em .7em;text-align:left;border-bottom:1px solid #ddd}}td{{white-space:nowrap}}
.n{{text-align:right}}.active{{color:#080}}.inactive,.expired{{color:#888}}form{{margin:1em 0}}</style></head>
<body><h1>IAM credentials</h1>
<p><a href="/">Exporter</a> · <a href="{json}">This page as JSON</a></p>
<form method="get" action="/keys"><select name="account">{options}</select> <select name="kind">{kinds}</select> <select name="status">{statuses}</select>
<input type="hidden" name="limit" value="{limit}"> <button type="submit">Show</button></form>
<p>{nav}</p>
<p>Service-specific credentials (Bedrock API keys, CodeCommit and Keyspaces passwords) and SSH public keys have no idle time: IAM records no use of them.</p>
<table><tr><th>Kind</th><th>Account</th><th>User</th><th>Owner</th><th>Access key, credential or role</th><th>Status</th><th>Age (days)</th><th>Idle (days)</th><th>Last used</th><th>Policy rule</th><th>Rotate by</th><th>Disable by</th><th>Expires</th><th>Exempt</th></tr>
{body}</table>
<p>{nav}</p></body></html>
"#,
        json = html_escape(&q.link(q.offset, "/keys.json")),
        limit = q.limit,
    )
}

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `%XX` and `+` of a query value.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let q = Query::parse(Some(
            "account=prod%20eu&status=Active&offset=10&limit=999999",
        ));
        assert_eq!(q.account.as_deref(), Some("prod eu"));
        assert_eq!(q.status.as_deref(), Some("Active"));
        assert_eq!((q.offset, q.limit), (10, MAX_PAGE));
        assert_eq!(Query::parse(None).limit, PAGE);
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(
            q.link(20, "/keys"),
            "/keys?offset=20&limit=5000&account=prod%20eu&status=Active"
        );
    }
}
