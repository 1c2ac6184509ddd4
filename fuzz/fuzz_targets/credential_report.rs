//! The credential report parser must never panic, whatever bytes AWS (or anything in
//! between) sends: every input either parses or gives a `ReportError`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = iam_key_exporter::inventory::credential_report::parse(data, 0.0) {
        // What parses is usable: every key belongs to a listed user.
        for k in &snapshot.keys {
            assert!(snapshot.users.iter().any(|u| u.name == k.user));
        }
    }
});
