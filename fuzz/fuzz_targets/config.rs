//! Arbitrary text into the config parser: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = hermes::Config::parse(text, std::path::Path::new("fuzz.json")) {
            // Printing and re-parsing the effective config is stable.
            let again = hermes::Config::parse(&cfg.to_pretty_json(), std::path::Path::new("x"))
                .expect("printed config parses");
            assert_eq!(again, cfg);
        }
    }
});
