//! The code of every function version, kept by its SHA-256.
//!
//! moto's `Code.Location` cannot be fetched, so sluice-local captures each zip as
//! it passes through (`CreateFunction`, `UpdateFunctionCode`) and finds a
//! version's code later by the `CodeSha256` that moto reports for it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("no code with CodeSha256 {0} was uploaded through sluice-local")]
    Unknown(String),
    #[error("CodeSha256 {0:?} is not a base64 SHA-256")]
    BadSha(String),
    #[error("the code package is not a valid zip: {0}")]
    BadZip(String),
    #[error("code store I/O at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CodeError + '_ {
    move |source| CodeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Lambda's form of a package's digest: base64 of its SHA-256.
pub fn code_sha256(zip: &[u8]) -> String {
    BASE64.encode(Sha256::digest(zip))
}

fn hex_of(code_sha: &str) -> Result<String, CodeError> {
    let digest = BASE64
        .decode(code_sha)
        .ok()
        .filter(|d| d.len() == 32)
        .ok_or_else(|| CodeError::BadSha(code_sha.to_owned()))?;
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

pub struct CodeStore {
    root: PathBuf,
    unpacked: Mutex<HashMap<String, Arc<OnceCell<PathBuf>>>>,
}

impl CodeStore {
    pub fn open(root: &Path) -> Result<Self, CodeError> {
        for dir in ["zips", "unpacked"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(io(&path))?;
        }
        Ok(CodeStore {
            root: root.to_owned(),
            unpacked: Mutex::new(HashMap::new()),
        })
    }

    /// Stores a package (a no-op when it is already there) and returns its CodeSha256.
    pub fn put(&self, zip: &[u8]) -> Result<String, CodeError> {
        zip::ZipArchive::new(std::io::Cursor::new(zip))
            .map_err(|e| CodeError::BadZip(e.to_string()))?;
        let sha = code_sha256(zip);
        let path = self.zip_path(&sha)?;
        if !path.exists() {
            // One partial file per upload: the same package may be uploaded
            // by several requests at once (functions that share their code).
            let partial = path.with_extension(format!("{}.partial", uuid::Uuid::new_v4()));
            std::fs::write(&partial, zip).map_err(io(&partial))?;
            std::fs::rename(&partial, &path).map_err(io(&path))?;
        }
        Ok(sha)
    }

    fn zip_path(&self, code_sha: &str) -> Result<PathBuf, CodeError> {
        Ok(self
            .root
            .join("zips")
            .join(format!("{}.zip", hex_of(code_sha)?)))
    }

    /// The directory holding the package unpacked, unpacking it the first time.
    /// Concurrent callers for one package wait for a single unpack.
    pub async fn unpacked(&self, code_sha: &str) -> Result<PathBuf, CodeError> {
        let hex = hex_of(code_sha)?;
        let cell = self
            .unpacked
            .lock()
            .expect("code store lock")
            .entry(hex.clone())
            .or_default()
            .clone();
        let zip_path = self.zip_path(code_sha)?;
        let dir = self.root.join("unpacked").join(&hex);
        let sha = code_sha.to_owned();
        cell.get_or_try_init(|| async move {
            if dir.exists() {
                return Ok(dir);
            }
            tokio::task::spawn_blocking(move || unpack(&zip_path, &dir, &sha).map(|()| dir))
                .await
                .expect("unpack task panicked")
        })
        .await
        .cloned()
    }
}

fn unpack(zip_path: &Path, dir: &Path, code_sha: &str) -> Result<(), CodeError> {
    let file = match std::fs::File::open(zip_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CodeError::Unknown(code_sha.to_owned()));
        }
        Err(e) => return Err(io(zip_path)(e)),
    };
    let mut archive = zip::ZipArchive::new(file).map_err(|e| CodeError::BadZip(e.to_string()))?;
    // Unpacked beside its final place and renamed, so a crash never leaves half a package.
    let staging = dir.with_extension(format!("{}.partial", uuid::Uuid::new_v4()));
    let _ = std::fs::remove_dir_all(&staging);
    archive
        .extract(&staging)
        .map_err(|e| CodeError::BadZip(e.to_string()))?;
    match std::fs::rename(&staging, dir) {
        Ok(()) => Ok(()),
        // Another sluice-local sharing the store got there first: same bytes.
        Err(_) if dir.exists() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(())
        }
        Err(e) => Err(io(dir)(e)),
    }
}

/// Packs one executable as a Lambda custom-runtime package (`bootstrap`, mode 755).
pub fn bootstrap_zip(executable: &[u8], extra_files: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    // The fastest deflate: packages here are built and unpacked on the same
    // machine, and a debug binary of tens of MB takes seconds at the default.
    let exec = zip::write::SimpleFileOptions::default()
        .compression_level(Some(1))
        .unix_permissions(0o755);
    zip.start_file("bootstrap", exec).expect("zip entry");
    zip.write_all(executable).expect("zip write");
    for (name, bytes) in extra_files {
        let plain = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
        zip.start_file(*name, plain).expect("zip entry");
        zip.write_all(bytes).expect("zip write");
    }
    zip.finish().expect("zip finish");
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn one_package_uploaded_by_many_requests_at_once_is_kept_once() {
        let zip = bootstrap_zip(&vec![7u8; 4 << 20], &[]);
        for _ in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            let store = CodeStore::open(tmp.path()).unwrap();
            let start = std::sync::Barrier::new(8);
            let shas: Vec<String> = std::thread::scope(|scope| {
                let uploads: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            store.put(&zip)
                        })
                    })
                    .collect();
                uploads
                    .into_iter()
                    .map(|u| u.join().unwrap().unwrap())
                    .collect()
            });
            assert!(shas.iter().all(|sha| *sha == code_sha256(&zip)));
            let kept: Vec<_> = std::fs::read_dir(tmp.path().join("zips"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(kept.len(), 1, "no partial file left: {kept:?}");
        }
    }

    #[tokio::test]
    async fn packages_are_kept_by_sha_and_unpacked_once_with_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CodeStore::open(tmp.path()).unwrap();
        let zip = bootstrap_zip(b"#!/bin/sh\n", &[("release", b"r1")]);
        let sha = store.put(&zip).unwrap();
        assert_eq!(sha, code_sha256(&zip));
        assert_eq!(store.put(&zip).unwrap(), sha, "storing twice is harmless");
        let (a, b) = tokio::join!(store.unpacked(&sha), store.unpacked(&sha));
        let dir = a.unwrap();
        assert_eq!(dir, b.unwrap());
        let mode = std::fs::metadata(dir.join("bootstrap"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(std::fs::read(dir.join("release")).unwrap(), b"r1");
    }

    #[tokio::test]
    async fn unknown_or_malformed_code_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CodeStore::open(tmp.path()).unwrap();
        assert!(matches!(store.put(b"not a zip"), Err(CodeError::BadZip(_))));
        let absent = code_sha256(b"never stored");
        assert!(matches!(
            store.unpacked(&absent).await,
            Err(CodeError::Unknown(_))
        ));
        assert!(matches!(
            store.unpacked("xyz").await,
            Err(CodeError::BadSha(_))
        ));
    }
}
