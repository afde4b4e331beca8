//! Entry points of the fuzz targets in `proxy/fuzz` (cargo-fuzz, nightly),
//! one per parser of bytes from a peer. Each panics when the parser breaks a
//! rule the proxy relies on; the parsers themselves stay private, and each
//! target lives next to the parser it checks.
//!
//! `cargo test` replays the committed corpus (`proxy/fuzz/corpus/<target>/`)
//! through the same functions, so every input a fuzzer kept, including those
//! that once found a bug, is a regression test on stable Rust.

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
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, check) in super::TARGETS {
            let inputs = std::fs::read_dir(corpus.join(name)).expect("the target's corpus");
            let mut count = 0;
            for input in inputs {
                let path = input.expect("a corpus entry").path();
                let data = std::fs::read(&path).expect("a corpus file");
                // Shown only when the check fails.
                println!("{name}: {}", path.display());
                check(&data);
                count += 1;
            }
            assert!(count > 0, "no corpus for {name}");
        }
    }
}
