//! Entry points of the fuzz targets in `proto/fuzz` (cargo-fuzz, nightly): the
//! YAML documents `weftctl apply` and `--static-config` read, and the
//! conversion of weft.v1 messages into the model at every edge. Each panics
//! when a rule breaks; a typed error is a pass.
//!
//! `cargo test` replays the committed inputs (the hand-written ones in
//! `proto/fuzz/seeds/<target>/`, and those the fuzzer kept, minimised, in
//! `proto/fuzz/corpus/<target>/`) through the same functions, so each is a
//! regression test on stable Rust.

use prost_types::Any;

use crate::document::{self, Document};
use crate::resource::{self, Body, DecodeError, Kind};

/// A target's check: it panics on a broken rule.
pub type Check = fn(&[u8]);

/// The targets by name, as `proto/fuzz/Cargo.toml` names them.
pub const TARGETS: [(&str, Check); 2] = [("document", document), ("model", model)];

/// Parses `data` as a YAML stream of documents. One that parses renders back
/// to YAML that parses to the same documents; goes to the API and back (as
/// `apply` then `get` do) unchanged; and converts into the model or fails
/// with a typed error.
pub fn document(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(documents) = document::parse(text) else {
        return;
    };
    let yaml = match document::to_yaml(&documents) {
        Ok(yaml) => yaml,
        Err(error) => panic!("parsed documents not rendered: {error}"),
    };
    match document::parse(&yaml) {
        Ok(again) => assert_eq!(again, documents, "rendered as:\n{yaml}"),
        Err(error) => panic!("the rendering does not parse: {error}\n{yaml}"),
    }
    for document in &documents {
        let resource = document.to_resource();
        match Document::from_resource(&resource) {
            Ok(stored) => assert_eq!(stored, as_stored(document), "changed by the API"),
            Err(error) => panic!("a document's own resource not read back: {error}"),
        }
        if let Ok(body) = resource::decode_resource(&resource) {
            round_trip(&body);
        }
    }
}

/// Decodes `data[1..]` as the message of the kind `data[0]` picks (modulo
/// their number), as a discovery push or an admin write arrives, and converts
/// it into the model.
pub fn model(data: &[u8]) {
    let Some((&pick, message)) = data.split_first() else {
        return;
    };
    let kind = Kind::ALL[usize::from(pick) % Kind::ALL.len()];
    let any = Any {
        type_url: kind.type_url().to_owned(),
        value: message.to_vec(),
    };
    match resource::decode(&any) {
        Ok(body) => round_trip(&body),
        Err(DecodeError::Malformed { .. } | DecodeError::Invalid { .. }) => {}
        Err(error) => panic!("a known type refused: {error}"),
    }
}

/// A model value survives the trip back to a message (as the store keeps it
/// and the discovery stream sends it) and into the model again.
fn round_trip(body: &Body) {
    match resource::decode(&body.to_any()) {
        Ok(again) => assert_eq!(&again, body, "changed by a round trip through its message"),
        Err(error) => panic!("a valid value's own message refused: {error}"),
    }
}

/// What `get` shows of an applied document: the store's version, no empty
/// locality (printing `locality: {}` would only be noise), and no creation time
/// (the control plane sets it; a document's own is ignored).
fn as_stored(document: &Document) -> Document {
    let mut document = document.clone();
    let metadata = match &mut document {
        Document::Service(d) => &mut d.metadata,
        Document::Endpoints(d) => &mut d.metadata,
        Document::TrustBundle(d) => &mut d.metadata,
        Document::AuthorizationPolicy(d) => &mut d.metadata,
        Document::HttpRoute(d) => &mut d.metadata,
        Document::GrpcRoute(d) => &mut d.metadata,
    };
    metadata.version = Some(0);
    metadata.creation_timestamp = None;
    if let Document::Endpoints(d) = &mut document {
        for endpoint in &mut d.spec.endpoints {
            let empty = |l: &document::LocalitySpec| l.region.is_empty() && l.zone.is_empty();
            if endpoint.locality.as_ref().is_some_and(empty) {
                endpoint.locality = None;
            }
        }
    }
    document
}

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
