//! The `hybrid` source: the credential report for everything it knows, real key ids from
//! ListAccessKeys only for users whose keys are not known yet.
//!
//! The report gives every user, each key slot's creation time (to the second), status and
//! last use, MFA, passwords and the root user, for two calls per account. It names keys only
//! by slot, so each user's key ids are learned with ListAccessKeys (matched to the slots by
//! creation second and status) and remembered between refreshes: a steady-state refresh
//! costs the report's calls plus one ListAccessKeys per user whose keys changed in the new
//! report.
//!
//! Nothing is wrong or missing, only as fresh as the report: a user's listing made since the
//! report was generated is fresher than it and stands (a key newer than the report, found
//! there, gets its last use from GetAccessKeyLastUsed; a key or user deleted since is
//! dropped) until the next report. A user created after the report appears with the next one
//! (at most 4 hours).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use super::api_source::{last_used, list_keys, per_user};
use super::{credential_report_source, Iam};
use crate::inventory::{AccessKey, KeyStatus, RefreshError, Snapshot, Timestamp};

/// What ListAccessKeys last said of each user, and against which report.
#[derive(Default)]
pub struct KnownKeys(Mutex<HashMap<String, Listing>>);

struct Listing {
    /// `GeneratedTime` of the report the listing was made after.
    report: Timestamp,
    /// The user's keys with their last use, or None: the user no longer existed.
    keys: Option<Vec<AccessKey>>,
}

/// Whether `key` is the key in report slot `slot`: same creation second, same activity.
fn same_key(key: &AccessKey, slot: &AccessKey) -> bool {
    key.created.floor() == slot.created.floor()
        && (key.status == KeyStatus::Active) == (slot.status == KeyStatus::Active)
}

pub async fn read(
    iam: &Iam,
    known: &KnownKeys,
    report_timeout: Duration,
    concurrency: usize,
) -> Result<Snapshot, RefreshError> {
    let mut report = credential_report_source::read(iam, report_timeout).await?;
    let generated = report.report_generated.unwrap_or_default();
    let mut slots: HashMap<String, Vec<AccessKey>> = HashMap::new();
    for key in std::mem::take(&mut report.keys) {
        slots.entry(key.user.clone()).or_default().push(key);
    }

    let mut keys = Vec::new();
    let mut gone = HashSet::new();
    let mut to_list = Vec::new();
    {
        let mut remembered = known.0.lock().unwrap();
        remembered.retain(|user, _| slots.contains_key(user));
        for (user, user_slots) in &slots {
            match remembered.get(user) {
                // Listed since this report was made: fresher than the report.
                Some(l) if l.report == generated => match &l.keys {
                    Some(k) => keys.extend(with_report_use(k, user_slots)),
                    None => {
                        gone.insert(user.clone());
                    }
                },
                // Listed against an older report: the ids carry over if the slots are the
                // same keys.
                Some(Listing { keys: Some(k), .. }) if matches_exactly(k, user_slots) => {
                    keys.extend(with_report_use(k, user_slots))
                }
                _ => to_list.push(user.clone()),
            }
        }
    }

    let slots = &slots;
    let listed = per_user(to_list, concurrency, |user| async move {
        let Some(listed) = list_keys(iam, &user).await? else {
            return Ok(None);
        };
        let mut found = Vec::with_capacity(listed.len());
        for key in listed {
            // A key the report has gets its last use there; a newer one from AWS.
            let last_used = match slots[&user].iter().find(|slot| same_key(&key, slot)) {
                Some(slot) => slot.last_used.clone(),
                None => match last_used(iam, &key.id).await? {
                    Some(used) => used,
                    None => continue,
                },
            };
            found.push(AccessKey { last_used, ..key });
        }
        Ok(Some(found))
    })
    .await?;

    let mut remembered = known.0.lock().unwrap();
    for (user, found) in listed {
        match &found {
            Some(k) => keys.extend(k.iter().cloned()),
            None => {
                gone.insert(user.clone());
            }
        }
        remembered.insert(
            user,
            Listing {
                report: generated,
                keys: found,
            },
        );
    }
    report.users.retain(|u| !gone.contains(&u.name));
    report.keys = keys;
    Ok(report)
}

/// Whether the remembered keys are exactly the report's slots, one to one.
fn matches_exactly(remembered: &[AccessKey], slots: &[AccessKey]) -> bool {
    let mut free: Vec<&AccessKey> = remembered.iter().collect();
    for slot in slots {
        match free.iter().position(|k| same_key(k, slot)) {
            Some(i) => {
                free.swap_remove(i);
            }
            None => return false,
        }
    }
    free.is_empty()
}

/// The remembered keys, with the last use the report gives for the ones it has.
fn with_report_use<'a>(
    remembered: &'a [AccessKey],
    slots: &'a [AccessKey],
) -> impl Iterator<Item = AccessKey> + 'a {
    remembered.iter().map(|k| {
        let last_used = slots
            .iter()
            .find(|slot| same_key(k, slot))
            .map_or_else(|| k.last_used.clone(), |slot| slot.last_used.clone());
        AccessKey {
            last_used,
            ..k.clone()
        }
    })
}
