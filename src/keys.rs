//! The key view: every access key of the inventory, oldest first, with its owner (the user's
//! tags named in `user_tags_as_labels`), use, the policy rule and deadlines that apply to it,
//! and exemption, filtered by account and status,
//! one page at a time, as an HTML page with no external assets (`/keys`) or as JSON
//! (`/keys.json`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;

use serde_json::json;

use crate::exemptions::{self, Exemption};
use crate::inventory::{
    date, whole_days as days, AccessKey, AccountState, KeyStatus, Standards, Timestamp, User,
};
use crate::policy::{self, KeyDeadlines};

/// Keys on one page unless asked otherwise, and the most one page may hold.
const PAGE: usize = 500;
const MAX_PAGE: usize = 5000;

/// What the page shows: `?account=<id or name>&status=Active&offset=0&limit=500`.
#[derive(Debug, Default, PartialEq)]
pub struct Query {
    pub account: Option<String>,
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
        if let Some(a) = &self.account {
            let _ = write!(s, "&account={}", encode(a));
        }
        if let Some(st) = &self.status {
            let _ = write!(s, "&status={}", encode(st));
        }
        s
    }
}

/// One key with what the view shows of it.
pub struct Row<'a> {
    pub state: &'a AccountState,
    pub key: &'a AccessKey,
    pub user: Option<&'a User>,
    pub exemption: Option<Exemption>,
    /// The policy rule that applies to the key's user.
    pub rule: String,
    /// The key's deadlines, if it is active (others have none).
    pub deadlines: Option<KeyDeadlines>,
}

/// The page: the matching keys' count and the rows of the page, oldest key first.
pub fn page<'a>(
    accounts: &'a [Arc<AccountState>],
    standards: &Standards,
    q: &Query,
    now: Timestamp,
) -> (usize, Vec<Row<'a>>) {
    let mut keys: Vec<(&AccountState, &AccessKey)> = accounts
        .iter()
        .filter(|s| {
            q.account
                .as_deref()
                .is_none_or(|a| a == s.account.id || a == s.account.name)
        })
        .filter_map(|s| s.snapshot.as_ref().map(|snap| (&**s, snap)))
        .flat_map(|(s, snap)| snap.keys.iter().map(move |k| (s, k)))
        .filter(|(_, k)| q.status.as_deref().is_none_or(|st| st == k.status.as_str()))
        .collect();
    let total = keys.len();
    keys.sort_by(|a, b| {
        a.1.created
            .total_cmp(&b.1.created)
            .then_with(|| (&a.0.account.id, &a.1.id).cmp(&(&b.0.account.id, &b.1.id)))
    });
    let mut users: HashMap<(&str, &str), &User> = HashMap::new();
    let mut loaded: HashSet<&str> = HashSet::new();
    let rows = keys
        .into_iter()
        .skip(q.offset)
        .take(q.limit)
        .map(|(state, key)| {
            let account = state.account.id.as_str();
            if loaded.insert(account) {
                for u in state.snapshot.iter().flat_map(|s| &s.users) {
                    users.insert((account, u.name.as_str()), u);
                }
            }
            let user = users.get(&(account, key.user.as_str())).copied();
            let exemption = user.and_then(|u| {
                let all = exemptions::of_user(&standards.exemptions, &state.account, u);
                exemptions::covering(&all, &key.id, now).cloned()
            });
            let tags_known = state.snapshot.as_ref().is_some_and(|s| s.user_tags_read);
            let decision = match user {
                Some(u) => policy::decide(&standards.policy, &state.account, u, tags_known),
                None => policy::defaults(&standards.policy),
            };
            Row {
                state,
                key,
                user,
                exemption,
                rule: decision.rule.to_string(),
                deadlines: (key.status == KeyStatus::Active)
                    .then(|| policy::key_deadlines(key, decision.limits)),
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
    let keys: Vec<_> = rows
        .iter()
        .map(|r| {
            let k = r.key;
            let used = k.last_used.as_ref();
            json!({
                "account_id": r.state.account.id,
                "account_name": r.state.account.name,
                "user": k.user,
                "access_key_id": k.id,
                "status": k.status.as_str(),
                "owner": owner(r)
                    .into_iter()
                    .map(|(t, v)| (t, json!(v)))
                    .collect::<serde_json::Map<_, _>>(),
                "created": date(k.created),
                "age_days": days(now - k.created),
                "idle_days": days(now - k.idle_since()),
                "policy_rule": r.rule,
                "rotate_by": r.deadlines.map(|d| date(d.rotate_by)),
                "disable_by": r.deadlines.map(|d| date(d.disable_by)),
                "last_used": used.map(|u| date(u.at)),
                "last_used_service": used.and_then(|u| u.service.clone()),
                "last_used_region": used.and_then(|u| u.region.clone()),
                "exempt_until": r.exemption.as_ref().map(Exemption::until_date),
                "exempt_reason": r.exemption.as_ref().map(|e| e.reason.clone()),
            })
        })
        .collect();
    json!({"total": total, "offset": q.offset, "limit": q.limit, "keys": keys}).to_string()
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
        let k = r.key;
        let used = k.last_used.as_ref();
        let idle = days(now - k.idle_since());
        let (rotate_by, disable_by) = r.deadlines.map_or((String::new(), String::new()), |d| {
            (date(d.rotate_by), date(d.disable_by))
        });
        let last = used.map_or("never".to_string(), |u| {
            let place: Vec<&str> = [u.service.as_deref(), u.region.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            format!("{} {}", date(u.at), place.join(" "))
        });
        let owner: Vec<String> = owner(r)
            .into_iter()
            .map(|(t, v)| format!("{t}: {v}"))
            .collect();
        let exempt = r.exemption.as_ref().map_or(String::new(), |e| {
            format!("until {} ({})", e.until_date(), e.reason)
        });
        let _ = writeln!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(&r.state.account.name),
            html_escape(&k.user),
            html_escape(&owner.join(", ")),
            html_escape(&k.id),
            html_escape(&k.status.as_str().to_lowercase()),
            html_escape(k.status.as_str()),
            days(now - k.created),
            idle,
            html_escape(&last),
            html_escape(&r.rule),
            rotate_by,
            disable_by,
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
        "Showing {} to {shown_to} of {total} keys, oldest first.",
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
<html><head><meta charset="utf-8"><title>IAM access keys</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{padding:.25em .7em;text-align:left;border-bottom:1px solid #ddd}}td{{white-space:nowrap}}
.n{{text-align:right}}.active{{color:#080}}.inactive,.expired{{color:#888}}form{{margin:1em 0}}</style></head>
<body><h1>IAM access keys</h1>
<p><a href="/">Exporter</a> · <a href="{json}">This page as JSON</a></p>
<form method="get" action="/keys"><select name="account">{options}</select> <select name="status">{statuses}</select>
<input type="hidden" name="limit" value="{limit}"> <button type="submit">Show</button></form>
<p>{nav}</p>
<table><tr><th>Account</th><th>User</th><th>Owner</th><th>Access key</th><th>Status</th><th>Age (days)</th><th>Idle (days)</th><th>Last used</th><th>Policy rule</th><th>Rotate by</th><th>Disable by</th><th>Exempt</th></tr>
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
