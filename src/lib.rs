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
}
