//! Entry points of the fuzz targets in `proxy/fuzz` (cargo-fuzz, nightly),
//! one per parser of bytes from a peer. Each panics when the parser breaks a
//! rule the proxy relies on; the parsers themselves stay private, and each
//! target lives next to the parser it checks.
//!
//! `cargo test` replays the committed inputs (the hand-written ones in
//! `proxy/fuzz/seeds/<target>/`, and those the fuzzer kept, minimised, in
//! `proxy/fuzz/corpus/<target>/`) through the same functions, so each is a
//! regression test on stable Rust.

pub use crate::dataplane::http::h1client::fuzzing::{chunked_body, response_head};
pub use crate::dataplane::http::h1server::fuzzing::request_head;

/// A target's check: it panics on a broken rule.
pub type Check = fn(&[u8]);

/// The targets by name, as `proxy/fuzz/Cargo.toml` names them.
pub const TARGETS: [(&str, Check); 3] = [
    ("request_head", request_head),
    ("response_head", response_head),
    ("chunked_body", chunked_body),
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn the_committed_corpus_passes_every_check() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        for (name, check) in super::TARGETS {
            let mut count = 0;
            for kept in ["seeds", "corpus"] {
                let Ok(inputs) = std::fs::read_dir(fuzz.join(kept).join(name)) else {
                    continue;
                };
                for input in inputs {
                    let path = input.expect("a corpus entry").path();
                    let data = std::fs::read(&path).expect("a corpus file");
                    // Shown only when the check fails.
                    println!("{name}: {}", path.display());
                    check(&data);
                    count += 1;
                }
            }
            assert!(count > 0, "no seeds for {name}");
        }
    }
}
