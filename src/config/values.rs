//! Checks of single values as AWS and Prometheus accept them. Each returns the value or a
//! sentence saying what was expected.

/// Characters IAM allows in a role name besides letters and digits.
const ROLE_NAME_CHARS: &str = "+=,.@_-";

/// A name as AWS checks it: a length in `len`, letters, digits and the characters `extra`.
fn aws_name(
    what: &str,
    s: &str,
    len: std::ops::RangeInclusive<usize>,
    extra: &str,
) -> Result<String, String> {
    let ok = len.contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.as_bytes().contains(&b));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{what} {s:?} must be {}-{} of A-Z a-z 0-9 {extra}",
            len.start(),
            len.end()
        ))
    }
}

pub fn account_id(s: &str) -> Result<String, String> {
    if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err(format!("account id {s:?} must be exactly 12 digits"))
    }
}

/// The message for an account id written as a YAML number.
pub fn unquoted_account_id(s: &str) -> String {
    format!(
        "account id {s} must be quoted, like \"{s:0>12}\" (YAML tools read an unquoted id as a \
         number and drop its leading zeros)"
    )
}

pub fn role_name(s: &str) -> Result<String, String> {
    aws_name("role name", s, 1..=64, ROLE_NAME_CHARS)
}

pub fn session_name(s: &str) -> Result<String, String> {
    aws_name("session name", s, 2..=64, "+=,.@-_")
}

/// An ExternalId is half a secret (whoever knows it may pass the trust policy's condition),
/// so a wrong one is described, never printed: logs and CI output keep error messages.
pub fn external_id(s: &str) -> Result<String, String> {
    const EXTRA: &str = "+=,.@:/-_";
    let allowed = |c: char| c.is_ascii_alphanumeric() || EXTRA.contains(c);
    let chars = s.chars().count();
    if !(2..=1224).contains(&chars) {
        return Err(format!(
            "external id (not shown) must be 2-1224 characters long; it has {chars}"
        ));
    }
    match s.chars().position(|c| !allowed(c)) {
        Some(i) => Err(format!(
            "external id (not shown) may hold only A-Z a-z 0-9 {EXTRA}; its character {} is \
             none of them",
            i + 1
        )),
        None => Ok(s.to_string()),
    }
}

/// `arn:<partition>:iam::<12 digits>:role/<path/>name`.
pub fn role_arn(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "role ARN {s:?} does not parse: expected \
             arn:<partition>:iam::<12-digit account id>:role/<name>"
        )
    };
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts[..] else {
        return Err(bad());
    };
    let name_ok = resource
        .strip_prefix("role/")
        .is_some_and(|n| !n.is_empty() && n.split('/').all(|p| role_name(p).is_ok()));
    let ok = arn == "arn"
        && matches!(partition, "aws" | "aws-cn" | "aws-us-gov")
        && service == "iam"
        && region.is_empty()
        && account_id(account).is_ok()
        && name_ok;
    if ok {
        Ok(s.to_string())
    } else {
        Err(bad())
    }
}

/// The account id inside a role ARN that [`role_arn`] accepted.
pub fn arn_account(arn: &str) -> &str {
    arn.split(':').nth(4).unwrap_or("")
}

pub fn region(s: &str) -> Result<String, String> {
    let ok = s.split('-').count() >= 3
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "region {s:?} is not an AWS region name like us-east-1"
        ))
    }
}

/// A custom label name: valid in Prometheus and not one the exporter sets itself.
pub fn label_name(s: &str) -> Result<String, String> {
    let mut bytes = s.bytes();
    let ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.starts_with("__");
    if !ok {
        return Err(format!(
            "label name {s:?} is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    if matches!(s, "account_id" | "account_name") {
        return Err(format!("label name {s:?} is set by the exporter itself"));
    }
    Ok(s.to_string())
}

/// An organizational unit id (`ou-ab12-cdef3456`) or a root id (`r-ab12`), as AWS Organizations
/// writes them.
pub fn ou_id(s: &str) -> Result<String, String> {
    let lower_alnum = |p: &str, len: std::ops::RangeInclusive<usize>| {
        len.contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let ok = match s.split('-').collect::<Vec<_>>()[..] {
        ["ou", root, ou] => lower_alnum(root, 4..=32) && lower_alnum(ou, 8..=32),
        ["r", root] => lower_alnum(root, 4..=32),
        _ => false,
    };
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not an organizational unit id like ou-ab12-cdef3456 (or a root id like r-ab12)"
        ))
    }
}

/// A user name or a pattern of them (`*`, `?`): IAM's characters and the wildcards.
pub fn user_pattern(s: &str) -> Result<String, String> {
    aws_name("user name or pattern", s, 1..=64, "+=,.@_-*?")
}

pub fn access_key_id(s: &str) -> Result<String, String> {
    let ok = (16..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not an access key id like AKIAIOSFODNN7EXAMPLE"
        ))
    }
}

/// A calendar date `YYYY-MM-DD`, as the end of that day (UTC) in Unix seconds.
pub fn until_date(s: &str) -> Result<f64, String> {
    use aws_smithy_types::date_time::{DateTime, Format};
    let start = (s.len() == 10)
        .then(|| DateTime::from_str(&format!("{s}T00:00:00Z"), Format::DateTime).ok())
        .flatten()
        .ok_or_else(|| format!("{s:?} is not a date like 2027-03-31"))?;
    Ok(start.as_secs_f64() + 86400.0)
}

/// An AWS tag key (1-128 characters) and the label name it becomes: `tag_` and the key with
/// every character a label name cannot hold replaced by `_`.
pub fn tag_label(s: &str) -> Result<String, String> {
    tag_key(s)?;
    let sanitized: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Ok(format!("tag_{sanitized}"))
}

/// A tag key AWS lets a user or account carry: 1-128 characters, not `aws:...`.
pub fn tag_key(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().count() > 128 || s.starts_with("aws:") {
        return Err(format!(
            "tag key {s:?} is not one an account or user can carry (1-128 characters, not aws:...)"
        ));
    }
    Ok(s.to_string())
}

/// An IAM path prefix: `/`, or `/` then names each ending in `/` (`/breakglass/`).
pub fn iam_path(s: &str) -> Result<String, String> {
    let ok = (1..=512).contains(&s.len())
        && s.starts_with('/')
        && s.ends_with('/')
        && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not an IAM path: it starts and ends with / (like /breakglass/), \
             1-512 printable ASCII characters"
        ))
    }
}

/// A policy rule's name, as it appears in the `policy_rule` label and in audits.
pub fn rule_name(s: &str) -> Result<String, String> {
    aws_name("rule name", s, 1..=64, "_.-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_arns() {
        assert!(account_id("012345678901").is_ok());
        assert!(account_id("12345678901").is_err());
        assert!(role_arn("arn:aws:iam::012345678901:role/path/Name").is_ok());
        assert!(role_arn("arn:aws:iam:012345678901:role/Name").is_err());
        assert_eq!(
            arn_account("arn:aws:iam::012345678901:role/N"),
            "012345678901"
        );
        assert!(ou_id("ou-ab12-cdef3456").is_ok());
        assert!(ou_id("r-ab12").is_ok());
        assert!(ou_id("ou-AB12-cdef3456").is_err());
        assert!(ou_id("ou-ab12").is_err());
    }

    #[test]
    fn tag_keys_become_label_names() {
        assert_eq!(tag_label("cost-center").unwrap(), "tag_cost_center");
        assert_eq!(tag_label("team").unwrap(), "tag_team");
        assert_eq!(tag_label("owner:e.mail/1").unwrap(), "tag_owner_e_mail_1");
        assert_eq!(tag_label("Équipe").unwrap(), "tag__quipe");
        assert!(tag_label("").is_err());
        assert!(tag_label("aws:createdBy").is_err());
    }
}
