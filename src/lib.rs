//! iam-key-exporter as a library, for the binary in `main.rs`, the benchmarks and the fuzz
//! target: only the modules they use are public, so code nothing calls is a warning.
//! ARCHITECTURE.md has the code map; data flows down this list, never back up:
//! config → accounts → refresh (discovery, the gate, the refresher) → aws → inventory →
//! policy and exemptions → metrics, web, report.

pub mod accounts;
mod aws;
pub mod cli;
pub mod config;
pub mod exemptions;
pub mod inventory;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod refresh;
pub mod report;
pub mod web;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::inventory::{whole_days, AccountState, Standards, Timestamp, DAY};
    use crate::report::findings::{self, Finding, Kind};

    const NOW: Timestamp = 2e9;

    /// Every `.rs` file under `src/`, by its path from there.
    fn source_files() -> Vec<String> {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let relative = path.strip_prefix(&src).unwrap();
                    files.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        files.sort_unstable();
        files
    }

    /// ARCHITECTURE.md's code map names every source file, and no file that is gone.
    #[test]
    fn the_code_map_names_every_source_file() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
        let (_, map) = doc.split_once("## Code map").unwrap();
        let (map, _) = map.split_once("\n## ").unwrap();
        let mut named: Vec<&str> = map
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split_once("` |"))
            .map(|(file, _)| file)
            .collect();
        named.push("lib.rs");
        named.sort_unstable();
        assert_eq!(named, source_files(), "the code map's modules and src/");
    }

    /// What the data passes on its way to the outputs knows none of them: the configuration,
    /// the accounts, the AWS layer (it reports to the `Meter` the refresher gives it), the
    /// inventory and the judgement never name the refresher, the metrics, the web server or
    /// the report.
    #[test]
    fn the_layers_before_the_outputs_know_none_of_them() {
        let upstream = [
            "config/",
            "aws/",
            "inventory/",
            "accounts.rs",
            "policy.rs",
            "exemptions.rs",
        ];
        let outputs = ["refresh", "metrics", "web", "report"];
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut checked = 0;
        for file in source_files() {
            if !upstream.iter().any(|u| file.starts_with(u)) {
                continue;
            }
            checked += 1;
            let text = std::fs::read_to_string(src.join(&file)).unwrap();
            for output in outputs {
                let path = format!("crate::{output}");
                assert!(!text.contains(&path), "{file} names {path}");
            }
            assert!(
                !text.contains("prometheus::"),
                "{file} uses the prometheus crate"
            );
        }
        assert!(checked > 20, "only {checked} files checked");
    }

    /// The three outputs of one account under the default policy: the exposition, the
    /// rows of `/keys.json` (every kind), and the audit's findings.
    fn outputs(state: AccountState) -> (String, Vec<serde_json::Value>, Vec<Finding>) {
        let accounts = vec![Arc::new(state)];
        let standards = Arc::new(Standards::default());
        let health = crate::metrics::health::Health::new(
            0.0,
            Default::default(),
            crate::metrics::health::BuildInfo {
                version: "t",
                revision: "t",
                rustc_version: "t",
            },
        );
        let text: Vec<u8> = crate::metrics::collector::render(
            &accounts,
            standards.clone(),
            &health,
            crate::metrics::collector::Scope::Server,
            NOW,
        )
        .flatten()
        .collect();
        let page = crate::web::keys::Page::select(
            accounts.clone(),
            standards.clone(),
            crate::web::keys::Query::parse(Some("limit=1000")),
            NOW,
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&page.json().flatten().collect::<Vec<u8>>()).unwrap();
        let rows = doc["keys"].as_array().unwrap().clone();
        let findings = findings::of_account(&accounts[0], &standards, NOW);
        (String::from_utf8(text).unwrap(), rows, findings)
    }

    /// The value of the sample of `family` whose labels contain `label`.
    fn sample(text: &str, family: &str, label: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
            .unwrap_or_else(|| panic!("no {family} with {label}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    fn row<'a>(rows: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
        rows.iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no /keys.json row for {id}"))
    }

    fn finding<'a>(all: &'a [Finding], kind: Kind, id: &str) -> &'a Finding {
        all.iter()
            .find(|f| f.kind == kind && f.credential_id.as_deref().unwrap_or(&f.user) == id)
            .unwrap_or_else(|| panic!("no {kind:?} finding for {id}"))
    }

    /// The date a finding's deadline falls on, as `/keys.json` writes dates.
    fn deadline(f: &Finding) -> String {
        crate::inventory::date(f.deadline.as_ref().expect("a deadline").0)
    }

    /// A fact shown in several places is computed in one: an access key's age, its idle time
    /// and its disable-by deadline read the same on `/metrics`, in `/keys.json` and in the
    /// audit's findings (`AccessKey::idle_since`, `policy::key_deadlines`).
    #[test]
    fn a_keys_age_idle_time_and_deadline_read_the_same_in_every_output() {
        use crate::inventory::LastUse;

        let (created, used) = (NOW - 400.0 * DAY, NOW - 60.5 * DAY);
        let mut state = Arc::try_unwrap(crate::inventory::sample_state(1, 0)).unwrap();
        let mut snapshot = Arc::try_unwrap(state.snapshot.take().unwrap()).unwrap();
        let key = &mut snapshot.keys[0];
        key.created = created;
        key.last_used = Some(LastUse {
            at: used,
            service: None,
            region: None,
        });
        let key_id = key.id.clone();
        state.snapshot = Some(Arc::new(snapshot));
        let (text, rows, findings) = outputs(state);

        let (age, idle) = (NOW - created, NOW - used);
        assert_eq!(
            sample(&text, "aws_iam_access_key_age_seconds", &key_id),
            age
        );
        assert_eq!(
            sample(&text, "aws_iam_access_key_idle_seconds", &key_id),
            idle
        );
        let row = row(&rows, &key_id);
        assert_eq!(row["age_days"], whole_days(age));
        assert_eq!(row["idle_days"], whole_days(idle));
        // Idle 60 days against the default 45: unused, by the same deadline /keys shows.
        let unused = finding(&findings, Kind::KeyUnused, &key_id);
        assert_eq!(unused.days, Some(whole_days(idle)));
        assert_eq!(row["disable_by"], deadline(unused));
        let old = finding(&findings, Kind::KeyTooOld, &key_id);
        assert_eq!(old.days, Some(whole_days(age)));
        assert_eq!(row["rotate_by"], deadline(old));
    }

    /// The same for the other credentials: a service-specific credential's and an SSH key's
    /// age and rotation date (`policy::rotate_by`), a role's idle time (`Role::idle_since`)
    /// and the date it became unused (`policy::role_deadline`).
    #[test]
    fn other_credentials_ages_idle_times_and_deadlines_read_the_same_in_every_output() {
        use crate::inventory::{KeyStatus, RoleUse, SshKey};

        let mut state = Arc::try_unwrap(crate::inventory::sample_state(1, 0)).unwrap();
        let mut snapshot = Arc::try_unwrap(state.snapshot.take().unwrap()).unwrap();
        let service = &mut snapshot.service_credentials.as_mut().unwrap()[0];
        service.created = NOW - 300.25 * DAY;
        service.expires = None;
        let (service_id, service_age) = (service.id.clone(), NOW - service.created);
        let role = &mut snapshot.roles.as_mut().unwrap()[0];
        role.last_used = Some(RoleUse {
            at: NOW - 200.75 * DAY,
            region: None,
        });
        let (role_name, role_idle) = (role.name.clone(), 200.75 * DAY);
        let ssh_id = "APKA00000000000000001";
        snapshot.ssh_keys = Some(vec![SshKey {
            user: snapshot.users[0].name.clone(),
            id: ssh_id.into(),
            status: KeyStatus::Active,
            uploaded: NOW - 120.5 * DAY,
        }]);
        state.snapshot = Some(Arc::new(snapshot));
        let (text, rows, findings) = outputs(state);

        let family = "aws_iam_service_credential_age_seconds";
        assert_eq!(sample(&text, family, &service_id), service_age);
        let row_of_service = row(&rows, &service_id);
        assert_eq!(row_of_service["age_days"], whole_days(service_age));
        let old = finding(&findings, Kind::ServiceCredentialTooOld, &service_id);
        assert_eq!(old.days, Some(whole_days(service_age)));
        assert_eq!(row_of_service["rotate_by"], deadline(old));

        let ssh_age = 120.5 * DAY;
        let family = "aws_iam_ssh_public_key_age_seconds";
        assert_eq!(sample(&text, family, ssh_id), ssh_age);
        let row_of_ssh = row(&rows, ssh_id);
        assert_eq!(row_of_ssh["age_days"], whole_days(ssh_age));
        let old = finding(&findings, Kind::SshKeyTooOld, ssh_id);
        assert_eq!(old.days, Some(whole_days(ssh_age)));
        assert_eq!(row_of_ssh["rotate_by"], deadline(old));

        let label = format!("role=\"{role_name}\"");
        assert_eq!(
            sample(&text, "aws_iam_role_idle_seconds", &label),
            role_idle
        );
        let row_of_role = row(&rows, &role_name);
        assert_eq!(row_of_role["idle_days"], whole_days(role_idle));
        let unused = finding(&findings, Kind::RoleUnused, &role_name);
        assert_eq!(unused.days, Some(whole_days(role_idle)));
        assert_eq!(row_of_role["disable_by"], deadline(unused));
    }
}
