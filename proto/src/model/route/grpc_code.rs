//! gRPC status codes by their canonical names, as routes write them (`UNAVAILABLE`).

use std::fmt;

use crate::model::Invalid;

const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A gRPC status other than OK (which no route has a use for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrpcCode(u16);

impl GrpcCode {
    pub const UNAVAILABLE: GrpcCode = GrpcCode(14);

    /// Parses a canonical name; `field` names it in the error.
    pub fn parse(field: &str, text: &str) -> Result<GrpcCode, Invalid> {
        match NAMES.iter().position(|name| *name == text) {
            Some(code) if code > 0 => Ok(GrpcCode(code as u16)),
            _ => Err(Invalid::new(
                field,
                format!(
                    "{text:?} is not a gRPC status other than OK (one of {})",
                    NAMES[1..].join(", ")
                ),
            )),
        }
    }

    pub fn code(self) -> u16 {
        self.0
    }

    pub fn name(self) -> &'static str {
        NAMES[usize::from(self.0)]
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ok_is_refused() {
        for name in &NAMES[1..] {
            let code = GrpcCode::parse("f", name).expect("a name");
            assert_eq!(code.name(), *name);
        }
        assert_eq!(
            GrpcCode::parse("f", "UNAVAILABLE"),
            Ok(GrpcCode::UNAVAILABLE)
        );
        assert!(GrpcCode::parse("f", "OK").is_err());
        assert!(GrpcCode::parse("f", "unavailable").is_err());
        assert!(GrpcCode::parse("f", "14").is_err());
    }
}
