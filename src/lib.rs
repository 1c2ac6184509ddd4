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
        let mut files = Vec::new();
        let mut dirs = vec![root.join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let relative = path.strip_prefix(root.join("src")).unwrap();
                    files.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        files.sort_unstable();
        assert_eq!(named, files, "the code map's modules and src/");
    }

    /// A fact shown in several places is computed in one: an access key's age, its idle time
    /// and its disable-by deadline read the same on `/metrics`, in `/keys.json` and in the
    /// audit's findings (`AccessKey::idle_since`, `policy::key_deadlines`).
    #[test]
    fn a_keys_age_idle_time_and_deadline_read_the_same_in_every_output() {
        use std::sync::Arc;

        use crate::inventory::{whole_days, LastUse, Standards, DAY};

        let now = 2e9;
        let (created, used) = (now - 400.0 * DAY, now - 60.5 * DAY);
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
            now,
        )
        .flatten()
        .collect();
        let text = String::from_utf8(text).unwrap();
        let sample = |name: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(name) && l.contains(&key_id))
                .unwrap_or_else(|| panic!("no {name} for {key_id}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let (age, idle) = (now - created, now - used);
        assert_eq!(sample("aws_iam_access_key_age_seconds{"), age);
        assert_eq!(sample("aws_iam_access_key_idle_seconds{"), idle);

        let page = crate::web::keys::Page::select(
            accounts.clone(),
            standards.clone(),
            crate::web::keys::Query::parse(Some("kind=access_key")),
            now,
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&page.json().flatten().collect::<Vec<u8>>()).unwrap();
        let row = doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == key_id.as_str())
            .unwrap();
        assert_eq!(row["age_days"], whole_days(age));
        assert_eq!(row["idle_days"], whole_days(idle));

        // Idle 60 days against the default 45: unused, by the same deadline /keys shows.
        let findings = crate::report::findings::of_account(&accounts[0], &standards, now);
        let unused = findings
            .iter()
            .find(|f| {
                f.kind == crate::report::findings::Kind::KeyUnused
                    && f.credential_id.as_deref() == Some(key_id.as_str())
            })
            .expect("the key is unused past key_max_idle");
        assert_eq!(unused.days, Some(whole_days(idle)));
        let (deadline, _) = unused.deadline.as_ref().unwrap();
        assert_eq!(row["disable_by"], crate::inventory::date(*deadline));
    }
}
