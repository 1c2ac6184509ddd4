//! The credential view: every access key, service-specific credential, SSH key and role of the
//! inventory, oldest first, with its owner (the user's tags named in `user_tags_as_labels`),
//! use, the policy rule and deadlines that apply to it, and exemption, filtered by account,
//! kind and status, one page at a time, as an HTML page with no external assets (`/keys`)
//! or as JSON (`/keys.json`).

use std::collections::HashMap;
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
enum Credential<'a> {
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
struct Row<'a> {
    state: &'a AccountState,
    credential: Credential<'a>,
    user: Option<&'a User>,
    exemption: Option<Exemption>,
    /// The policy rule that applies to the credential's user, or the role.
    rule: String,
    /// When it must be rotated (active keys and service-specific credentials).
    rotate_by: Option<Timestamp>,
    /// When, unless used, it must be disabled (active keys) or removed (roles the alert
    /// judges).
    disable_by: Option<Timestamp>,
}

/// Every credential of an account: access keys, service-specific credentials, SSH keys,
/// roles. A credential's position in this sequence is its place in a [`Page`] (`at`).
fn credentials(s: &AccountState) -> impl Iterator<Item = Credential<'_>> {
    (0..).map_while(|at| credential_at(s, at))
}

/// The credential at `at` in the account's one order of credentials, found without walking
/// the others.
fn credential_at(s: &AccountState, at: usize) -> Option<Credential<'_>> {
    let snap = s.snapshot.as_deref()?;
    let mut at = at;
    if let Some(k) = snap.keys.get(at) {
        return Some(Credential::AccessKey(k));
    }
    at -= snap.keys.len();
    let service = snap.service_credentials.as_deref().unwrap_or_default();
    if let Some(c) = service.get(at) {
        return Some(Credential::Service(c));
    }
    at -= service.len();
    let ssh = snap.ssh_keys.as_deref().unwrap_or_default();
    if let Some(k) = ssh.get(at) {
        return Some(Credential::Ssh(k));
    }
    at -= ssh.len();
    snap.roles.as_deref()?.get(at).map(Credential::Role)
}

/// Rows rendered into one chunk of a page's body: about 45 KiB of JSON.
const ROWS_PER_CHUNK: usize = 64;

/// One page of the view, chosen but not yet rendered: where each of its credentials is, not
/// its text. It is rendered [`ROWS_PER_CHUNK`] rows at a time as it is sent, so a client
/// that reads slowly, or not at all, holds one chunk and this list (16 bytes a row), never
/// the whole page.
pub struct Page {
    accounts: Vec<Arc<AccountState>>,
    standards: Arc<Standards>,
    query: Query,
    now: Timestamp,
    /// How many credentials match the query, on every page.
    total: usize,
    picks: Vec<Pick>,
}

/// A credential of the page: its account (an index into `accounts`), its place in
/// [`credentials`], and its user's place in the snapshot's users.
#[derive(Clone, Copy)]
struct Pick {
    account: u32,
    at: u32,
    user: Option<u32>,
}

impl Page {
    /// The credentials matching the query, oldest first, and the page of them it asks for.
    pub fn select(
        accounts: Vec<Arc<AccountState>>,
        standards: Arc<Standards>,
        query: Query,
        now: Timestamp,
    ) -> Page {
        let mut found: Vec<(usize, usize, Credential)> = accounts
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                query
                    .account
                    .as_deref()
                    .is_none_or(|a| a == s.account.id || a == s.account.name)
            })
            .flat_map(|(i, s)| credentials(s).enumerate().map(move |(at, c)| (i, at, c)))
            .filter(|(_, _, c)| query.kind.as_deref().is_none_or(|k| k == c.kind()))
            .filter(|(_, _, c)| {
                query
                    .status
                    .as_deref()
                    .is_none_or(|st| c.status().is_some_and(|s| s.as_str() == st))
            })
            .collect();
        let total = found.len();
        found.sort_by(|(i, _, a), (j, _, b)| {
            a.created().total_cmp(&b.created()).then_with(|| {
                (&accounts[*i].account.id, a.id()).cmp(&(&accounts[*j].account.id, b.id()))
            })
        });
        // Users by name, for the accounts that have a credential on this page only.
        let mut users: HashMap<usize, HashMap<&str, u32>> = HashMap::new();
        let picks = found
            .into_iter()
            .skip(query.offset)
            .take(query.limit)
            .map(|(i, at, c)| {
                let names = users.entry(i).or_insert_with(|| {
                    let all = accounts[i].snapshot.iter().flat_map(|s| &s.users);
                    (0..).zip(all).map(|(n, u)| (u.name.as_str(), n)).collect()
                });
                Pick {
                    account: i as u32,
                    at: at as u32,
                    user: c.user().and_then(|name| names.get(name).copied()),
                }
            })
            .collect();
        Page {
            accounts,
            standards,
            query,
            now,
            total,
            picks,
        }
    }

    /// The rows of `range` of the page.
    fn rows(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = Row<'_>> {
        self.picks[range].iter().filter_map(|p| {
            let state = &*self.accounts[p.account as usize];
            let credential = credential_at(state, p.at as usize)?;
            let user = p.user.and_then(|u| {
                let snap = state.snapshot.as_deref()?;
                snap.users.get(u as usize)
            });
            Some(row(state, credential, user, &self.standards, self.now))
        })
    }

    /// The body in chunks: `head`, the rows [`ROWS_PER_CHUNK`] at a time as `write` renders
    /// each (with its place on the page), then `tail`.
    fn chunks<W>(self, head: String, tail: String, write: W) -> impl Iterator<Item = Vec<u8>>
    where
        W: Fn(usize, &Row, Timestamp, &mut String),
    {
        let mut next = 0;
        let rows = std::iter::from_fn(move || {
            let start = next;
            next = (start + ROWS_PER_CHUNK).min(self.picks.len());
            let mut out = String::new();
            for (i, row) in (start..).zip(self.rows(start..next)) {
                write(i, &row, self.now, &mut out);
            }
            (start < next).then(|| out.into_bytes())
        });
        std::iter::once(head.into_bytes())
            .chain(rows)
            .chain(std::iter::once(tail.into_bytes()))
    }

    /// `/keys.json`: `{"keys": [...], "limit", "offset", "total"}`.
    pub fn json(self) -> impl Iterator<Item = Vec<u8>> + Send + Sync {
        // The document around the rows, as serde_json orders its fields.
        let whole = json!({
            "total": self.total,
            "offset": self.query.offset,
            "limit": self.query.limit,
            "keys": [],
        })
        .to_string();
        let split = whole.find("[]").map_or(0, |i| i + 1);
        let (head, tail) = (whole[..split].to_string(), whole[split..].to_string());
        self.chunks(head, tail, |i, row, now, out| {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&json_row(row, now).to_string());
        })
    }

    /// `/keys`: the HTML page.
    pub fn html(self) -> impl Iterator<Item = Vec<u8>> + Send + Sync {
        let (head, tail) = html_frame(&self);
        self.chunks(head, tail, |_, row, now, out| html_row(row, now, out))
    }
}

/// What the view shows of one credential.
fn row<'a>(
    state: &'a AccountState,
    credential: Credential<'a>,
    user: Option<&'a User>,
    standards: &Standards,
    now: Timestamp,
) -> Row<'a> {
    let exemption = user.and_then(|u| {
        let all = exemptions::of_user(&standards.exemptions, &state.account, u);
        exemptions::covering(&all, credential.id(), now).cloned()
    });
    let tags_known = state.snapshot.as_ref().is_some_and(|s| s.user_tags_read);
    let decision = match (credential, user) {
        (Credential::Role(r), _) => policy::decide_role(&standards.policy, &state.account, r),
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

/// A row of `/keys.json`.
fn json_row(r: &Row, now: Timestamp) -> serde_json::Value {
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
            v["last_used_region"] = json!(role.last_used.as_ref().and_then(|u| u.region.clone()));
        }
    }
    v
}

/// A row of `/keys`' table.
fn html_row(r: &Row, now: Timestamp, out: &mut String) {
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
            out,
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

/// `/keys` around its rows: everything before the first row, everything after the last.
fn html_frame(page: &Page) -> (String, String) {
    let q = &page.query;
    let mut options = String::from("<option value=\"\">all accounts</option>");
    for s in &page.accounts {
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
    let total = page.total;
    let shown_to = (q.offset + page.picks.len()).min(total);
    let mut nav = format!(
        "Showing {} to {shown_to} of {total} credentials, oldest first.",
        if page.picks.is_empty() {
            0
        } else {
            q.offset + 1
        }
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
    let head = format!(
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
"#,
        json = html_escape(&q.link(q.offset, "/keys.json")),
        limit = q.limit,
    );
    (head, format!("</table>\n<p>{nav}</p></body></html>\n"))
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
    use std::collections::HashSet;

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

    fn page(users: usize, query: &str) -> Page {
        let accounts = vec![crate::inventory::sample_state(users, 3)];
        let standards = Arc::new(Standards::default());
        Page::select(accounts, standards, Query::parse(Some(query)), 2e9)
    }

    #[test]
    fn a_page_is_sent_in_chunks_of_a_few_rows_and_reads_as_one_document() {
        // 3 credentials a user: a page of 5,000 of the 6,000.
        let chunks: Vec<Vec<u8>> = page(2000, "limit=5000&offset=1000").json().collect();
        let largest = chunks.iter().map(Vec::len).max().unwrap();
        let whole: Vec<u8> = chunks.concat();
        assert!(
            largest * 50 < whole.len(),
            "the largest chunk ({largest} bytes) must be a small part of the page ({} bytes)",
            whole.len()
        );
        let doc: serde_json::Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(doc["total"], 6000);
        assert_eq!(
            (doc["offset"].as_u64(), doc["limit"].as_u64()),
            (Some(1000), Some(5000))
        );
        let keys = doc["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 5000);
        let ids: HashSet<&str> = keys.iter().filter_map(|k| k["id"].as_str()).collect();
        assert_eq!(ids.len(), 5000, "every row once");

        let html = String::from_utf8(page(2000, "limit=5000").html().flatten().collect()).unwrap();
        assert_eq!(html.matches("<tr><td>").count(), 5000);
        assert!(
            html.contains("Showing 1 to 5000 of 6000 credentials"),
            "{}",
            &html[..2000]
        );
        assert!(html.ends_with("</table>\n<p>Showing 1 to 5000 of 6000 credentials, oldest first. <a href=\"/keys?offset=5000&amp;limit=5000\">Next</a></p></body></html>\n"));
    }

    #[test]
    fn an_empty_page_is_a_whole_document() {
        let doc: serde_json::Value =
            serde_json::from_slice(&page(0, "").json().flatten().collect::<Vec<u8>>()).unwrap();
        assert_eq!(
            doc,
            json!({"total": 0, "offset": 0, "limit": PAGE, "keys": []})
        );
    }

    #[test]
    fn rows_carry_their_users_policy_and_kind() {
        let doc: serde_json::Value = serde_json::from_slice(
            &page(3, "kind=access_key")
                .json()
                .flatten()
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        let keys = doc["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 3);
        for k in keys {
            assert_eq!(k["kind"], "access_key");
            assert!(k["user"].as_str().unwrap().starts_with("uuu"), "{k}");
            assert_eq!(k["policy_rule"], "default");
            assert!(
                k["rotate_by"].is_string(),
                "an active key has a deadline: {k}"
            );
        }
    }
}
