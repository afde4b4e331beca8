//! The certified key kept in the state directory, so that a proxy restarted while
//! the control plane is unreachable still holds an identity and can speak mTLS
//! with its peers until the certificate expires (the routes come back from the
//! same directory). The file is written atomically and readable by its owner only,
//! like the key files of any TLS server; without `--state-dir` the key never
//! leaves memory.
//!
//! Format: `WEFTID01`, then length-delimited byte strings: the PKCS#8 key, then
//! the certificate chain, leaf first.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use prost::bytes::Buf;

const FILE: &str = "identity.key";
const MAGIC: &[u8; 8] = b"WEFTID01";

/// A key and its chain, as DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub key: Vec<u8>,
    pub chain: Vec<Vec<u8>>,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes the file (mode 0600) through a temporary one renamed over it. Blocking.
pub fn save(dir: &Path, saved: &Saved) -> std::io::Result<()> {
    let mut bytes = MAGIC.to_vec();
    for item in std::iter::once(&saved.key).chain(&saved.chain) {
        prost::encoding::encode_varint(item.len() as u64, &mut bytes);
        bytes.extend_from_slice(item);
    }
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path(dir))
}

/// The saved key and chain; `None` without a file. A file that is not one of ours,
/// or is cut short, is an `InvalidData` error, never a panic.
pub fn load(dir: &Path) -> std::io::Result<Option<Saved>> {
    let bytes = match std::fs::read(path(dir)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| invalid("not a saved identity"))?;
    let mut items = Vec::new();
    while rest.has_remaining() {
        let len =
            prost::encoding::decode_varint(&mut rest).map_err(|_| invalid("corrupt length"))?;
        let len = usize::try_from(len).map_err(|_| invalid("corrupt length"))?;
        if len > rest.len() {
            return Err(invalid("cut short"));
        }
        items.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    let mut items = items.into_iter();
    let key = items.next().ok_or_else(|| invalid("no key"))?;
    let chain: Vec<Vec<u8>> = items.collect();
    if chain.is_empty() {
        return Err(invalid("no certificate"));
    }
    Ok(Some(Saved { key, chain }))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_saved_identity_loads_back_and_only_its_owner_reads_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("no file"), None);
        let saved = Saved {
            key: vec![1; 138],
            chain: vec![vec![2; 500], vec![3; 400]],
        };
        save(dir.path(), &saved).expect("save");
        assert_eq!(load(dir.path()).expect("load"), Some(saved));
        let mode = std::fs::metadata(path(dir.path()))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bytes in [&b"garbage"[..], b"WEFTID01\x05ab", b"WEFTID01\x01a"] {
            std::fs::write(path(dir.path()), bytes).expect("write");
            let error = load(dir.path()).expect_err("damaged");
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{bytes:?}");
        }
    }
}
