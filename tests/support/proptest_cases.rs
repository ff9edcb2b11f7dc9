//! How many cases a property test runs: its own count, unless `PROPTEST_CASES` asks for
//! another. Shared by the fuzz test binaries (each includes this file by path).

use proptest::prelude::ProptestConfig;

/// `cases` cases, or what `PROPTEST_CASES` asks for.
pub fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_some() {
        default
    } else {
        ProptestConfig { cases, ..default }
    }
}
