//! Detached signatures over a repository's instruction files, where the policy asks for them.
//!
//! **Scheme: one signed manifest.** A repository lists the SHA-256 of its instruction files in
//! [`MANIFEST`] (`.warden/instructions.sha256`), in `sha256sum` format (`<64 hex>  <path>`
//! per line, paths relative to the repository root; blank lines and `#` comments allowed),
//! and signs that one file with a detached signature beside it:
//!
//! * **minisign**: `minisign -Sm .warden/instructions.sha256` → `.warden/instructions.sha256.minisig`
//!   (pre-hashed signatures only; legacy ones are refused);
//! * **SSH**: `ssh-keygen -Y sign -f KEY -n warden-instructions .warden/instructions.sha256` →
//!   `.warden/instructions.sha256.sig`. The namespace must be [`SSH_NAMESPACE`]. Ed25519 keys
//!   only: a signature made with another algorithm is refused with a message saying so.
//!
//! One signature covers the whole set, so the signer approves the set as a whole, a removed
//! file is noticed (a file the manifest lists must exist), and signature files never sit
//! among a skill's supporting files. `warden trust --manifest` prints the manifest of the
//! files a run loads.
//!
//! **Verification** ([`verify_signatures`]), fail closed: when the policy requires signatures,
//! the manifest and at least one signature must exist, one signature must verify against an
//! allowed signer, every file the run loads must be listed with its exact SHA-256, and every
//! listed file must exist. A file imported from the home directory cannot be listed and fails.
//! When signatures are not required but allowed signers are named, a signature that is
//! present is verified all the same (a bad one stops the run); with no signature the run goes
//! on unsigned. With no signer and nothing required, nothing is read.
//!
//! Sigstore bundles are not supported: see the crate's trust documentation.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{TrustedFile, check_key};
use crate::instructions::files::inside;

/// The manifest of instruction file hashes, relative to the repository root.
pub const MANIFEST: &str = ".warden/instructions.sha256";
/// The minisign signature of the manifest.
pub const MINISIGN_SIGNATURE: &str = ".warden/instructions.sha256.minisig";
/// The SSH signature of the manifest.
pub const SSH_SIGNATURE: &str = ".warden/instructions.sha256.sig";
/// The namespace of SSH signatures (`ssh-keygen -Y sign -n`).
pub const SSH_NAMESPACE: &str = "warden-instructions";
/// Neither the manifest nor a signature is read past this size.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// What the policy asks of signatures.
#[derive(Debug, Clone, Default)]
pub struct SignaturePolicy {
    /// A run stops unless the manifest is signed by an allowed signer and covers every file.
    pub required: bool,
    pub allowed_signers: Vec<AllowedSigner>,
}

/// A key whose signatures are accepted.
#[derive(Debug, Clone)]
pub enum AllowedSigner {
    Minisign {
        /// Named in messages: the key's comment, or its key id.
        name: String,
        key: minisign_verify::PublicKey,
    },
    Ssh {
        /// Named in messages: the principal or comment, and the SHA-256 fingerprint.
        name: String,
        key: ssh_key::PublicKey,
    },
}

impl AllowedSigner {
    /// A signer from the text of a key file: a minisign public key file (`untrusted comment:`
    /// line and key) or its base64 line (`RW...`), an OpenSSH public key line
    /// (`ssh-ed25519 AAAA... comment`), or a line of an OpenSSH allowed_signers file
    /// (`principal ssh-ed25519 AAAA...`, without options).
    pub fn parse(text: &str) -> Result<AllowedSigner, SignatureError> {
        let text = text.trim();
        let bad = |reason: String| SignatureError::BadSigner { reason };
        if text.starts_with("untrusted comment:") {
            let key = minisign_verify::PublicKey::decode(text)
                .map_err(|e| bad(format!("not a minisign public key: {e}")))?;
            return Ok(minisign_signer(key, text.lines().next()));
        }
        if text.starts_with("RW") && !text.contains(char::is_whitespace) {
            let key = minisign_verify::PublicKey::from_base64(text)
                .map_err(|e| bad(format!("not a minisign public key: {e}")))?;
            return Ok(minisign_signer(key, None));
        }
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| bad("empty".into()))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let (principal, key_text) = match words.first() {
            Some(w) if is_ssh_key_type(w) => (None, line.to_string()),
            Some(p) if words.get(1).is_some_and(|w| is_ssh_key_type(w)) => {
                (Some(*p), words[1..].join(" "))
            }
            _ => {
                return Err(bad(
                    "neither a minisign public key nor an OpenSSH public key (`ssh-ed25519 AAAA...`)"
                        .into(),
                ));
            }
        };
        let key_type = key_text.split_whitespace().next().unwrap_or("");
        if key_type != "ssh-ed25519" {
            return Err(bad(format!(
                "a {key_type} key: warden verifies SSH signatures of Ed25519 keys only (ssh-keygen -t ed25519)"
            )));
        }
        let key = ssh_key::PublicKey::from_openssh(&key_text)
            .map_err(|e| bad(format!("not an OpenSSH public key: {e}")))?;
        let fp = key.fingerprint(ssh_key::HashAlg::Sha256);
        let who = principal
            .map(str::to_string)
            .or_else(|| Some(key.comment().to_string()).filter(|c| !c.is_empty()));
        let name = match who {
            Some(w) => format!("{w} ({fp})"),
            None => fp.to_string(),
        };
        Ok(AllowedSigner::Ssh { name, key })
    }

    pub fn name(&self) -> &str {
        match self {
            AllowedSigner::Minisign { name, .. } | AllowedSigner::Ssh { name, .. } => name,
        }
    }
}

fn minisign_signer(key: minisign_verify::PublicKey, comment: Option<&str>) -> AllowedSigner {
    let name = comment
        .and_then(|c| c.strip_prefix("untrusted comment:"))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| format!("minisign key ({c})"))
        .unwrap_or_else(|| "minisign key".to_string());
    AllowedSigner::Minisign { name, key }
}

fn is_ssh_key_type(w: &str) -> bool {
    w.starts_with("ssh-") || w.starts_with("sk-") || w.starts_with("ecdsa-sha2-")
}

/// How verification ended when the run may go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SignatureReport {
    /// No signature required and no signer named: nothing was checked.
    NotRequired,
    /// Not required, and the repository has no signed manifest.
    Unsigned,
    /// The manifest is signed by `signer` and covers every file.
    Verified { signer: String, signature: PathBuf },
}

/// Why a run stops over signatures. Each names the file and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signatures are required, but the policy names no allowed signer")]
    NoSigners,
    #[error("allowed signer: {reason}")]
    BadSigner { reason: String },
    #[error(
        "signatures are required, but {path} is missing (list the instruction files' SHA-256 there, in `sha256sum` format, and sign it)"
    )]
    MissingManifest { path: PathBuf },
    #[error(
        "signatures are required, but {manifest} has no signature: neither {minisig} (minisign -Sm) nor {sig} (ssh-keygen -Y sign -n {SSH_NAMESPACE})"
    )]
    MissingSignature {
        manifest: PathBuf,
        minisig: PathBuf,
        sig: PathBuf,
    },
    #[error("{path} cannot be read: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{manifest} is not signed by an allowed signer: {}", problems.join("; "))]
    BadSignature {
        manifest: PathBuf,
        problems: Vec<String>,
    },
    #[error("{path} line {line}: {reason}")]
    Manifest {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "{file} is not listed in the signed manifest {manifest}: it is not loaded until the signer lists it"
    )]
    Unlisted { file: String, manifest: PathBuf },
    #[error(
        "{file} has SHA-256 {actual}, but the signed manifest {manifest} lists {listed}: it changed after it was signed"
    )]
    Mismatch {
        file: String,
        manifest: PathBuf,
        listed: String,
        actual: String,
    },
    #[error("{file} is listed in the signed manifest {manifest} but does not exist")]
    ListedMissing { file: String, manifest: PathBuf },
    #[error(
        "{file} lies outside the repository: a repository's signed manifest cannot cover it, so it is not loaded while signatures are required"
    )]
    NotCoverable { file: String },
}

/// Verifies the repository's signed manifest against `files` (the files a run loads, from
/// [`super::collect`]) as `policy` asks. See the module documentation for the rules.
pub fn verify_signatures(
    policy: &SignaturePolicy,
    repo_root: &Path,
    files: &[TrustedFile],
) -> Result<SignatureReport, SignatureError> {
    if !policy.required && policy.allowed_signers.is_empty() {
        return Ok(SignatureReport::NotRequired);
    }
    if policy.required && policy.allowed_signers.is_empty() {
        return Err(SignatureError::NoSigners);
    }
    let root = repo_root.canonicalize().map_err(|e| SignatureError::Read {
        path: repo_root.to_path_buf(),
        reason: e.to_string(),
    })?;
    let manifest_path = root.join(MANIFEST);
    let minisig_path = root.join(MINISIGN_SIGNATURE);
    let sig_path = root.join(SSH_SIGNATURE);
    let manifest = read_in_repo(&root, &manifest_path)?;
    let minisig = read_in_repo(&root, &minisig_path)?;
    let sshsig = read_in_repo(&root, &sig_path)?;
    let Some(manifest) = manifest else {
        if policy.required {
            return Err(SignatureError::MissingManifest {
                path: manifest_path,
            });
        }
        return Ok(SignatureReport::Unsigned);
    };
    if minisig.is_none() && sshsig.is_none() {
        if policy.required {
            return Err(SignatureError::MissingSignature {
                manifest: manifest_path,
                minisig: minisig_path,
                sig: sig_path,
            });
        }
        return Ok(SignatureReport::Unsigned);
    }

    let mut problems = Vec::new();
    let mut verified: Option<(String, PathBuf)> = None;
    if let Some(sig) = &minisig {
        match verify_minisign(&policy.allowed_signers, &manifest, sig) {
            Ok(name) => verified = Some((name, minisig_path.clone())),
            Err(p) => problems.push(format!("{}: {p}", minisig_path.display())),
        }
    }
    if verified.is_none()
        && let Some(sig) = &sshsig
    {
        match verify_ssh(&policy.allowed_signers, &manifest, sig) {
            Ok(name) => verified = Some((name, sig_path.clone())),
            Err(p) => problems.push(format!("{}: {p}", sig_path.display())),
        }
    }
    let Some((signer, signature)) = verified else {
        return Err(SignatureError::BadSignature {
            manifest: manifest_path,
            problems,
        });
    };

    let listed = parse_manifest(&manifest, &manifest_path)?;
    for f in files {
        if f.key.starts_with("~/") {
            return Err(SignatureError::NotCoverable {
                file: f.path.display().to_string(),
            });
        }
        match listed.get(&f.key) {
            None => {
                return Err(SignatureError::Unlisted {
                    file: f.key.clone(),
                    manifest: manifest_path,
                });
            }
            Some(h) if *h != f.sha256_hex() => {
                return Err(SignatureError::Mismatch {
                    file: f.key.clone(),
                    manifest: manifest_path,
                    listed: h.clone(),
                    actual: f.sha256_hex(),
                });
            }
            Some(_) => {}
        }
    }
    for key in listed.keys() {
        if !files.iter().any(|f| &f.key == key) && fs::metadata(root.join(key)).is_err() {
            return Err(SignatureError::ListedMissing {
                file: key.clone(),
                manifest: manifest_path,
            });
        }
    }
    Ok(SignatureReport::Verified { signer, signature })
}

/// The text of the manifest for `files`, in `sha256sum` format, for the signer to review and
/// sign. Files outside the repository are left out (they cannot be covered).
pub fn manifest_text(files: &[TrustedFile]) -> String {
    let mut out = String::new();
    for f in files.iter().filter(|f| !f.key.starts_with("~/")) {
        out.push_str(&format!("{}  {}\n", f.sha256_hex(), f.key));
    }
    out
}

/// A file of the repository, `None` when it does not exist; refused when it resolves outside
/// the repository, is not a regular file, or is too large.
fn read_in_repo(root: &Path, path: &Path) -> Result<Option<Vec<u8>>, SignatureError> {
    let err = |reason: String| SignatureError::Read {
        path: path.to_path_buf(),
        reason,
    };
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e.to_string())),
        Ok(_) => {}
    }
    let real = path.canonicalize().map_err(|e| err(e.to_string()))?;
    if !inside(&real, root) {
        return Err(err("it resolves outside the repository".into()));
    }
    let file = fs::File::open(&real).map_err(|e| err(e.to_string()))?;
    let meta = file.metadata().map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(err(format!(
            "{} bytes, more than the {MAX_MANIFEST_BYTES} warden reads",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(err("it grew while it was read".into()));
    }
    Ok(Some(bytes))
}

fn verify_minisign(
    signers: &[AllowedSigner],
    manifest: &[u8],
    sig: &[u8],
) -> Result<String, String> {
    let text = std::str::from_utf8(sig).map_err(|_| "not a minisign signature (not text)")?;
    let sig = minisign_verify::Signature::decode(text)
        .map_err(|e| format!("not a minisign signature: {e}"))?;
    let keys: Vec<(&String, &minisign_verify::PublicKey)> = signers
        .iter()
        .filter_map(|s| match s {
            AllowedSigner::Minisign { name, key } => Some((name, key)),
            AllowedSigner::Ssh { .. } => None,
        })
        .collect();
    if keys.is_empty() {
        return Err("no minisign key is an allowed signer".into());
    }
    let mut wrong_key = true;
    for (name, key) in &keys {
        match key.verify(manifest, &sig, false) {
            Ok(()) => return Ok((*name).clone()),
            Err(minisign_verify::Error::UnexpectedKeyId) => {}
            Err(minisign_verify::Error::UnexpectedAlgorithm) => {
                return Err(
                    "a legacy (not pre-hashed) minisign signature, which warden refuses: sign again with a current minisign".into(),
                );
            }
            Err(_) => wrong_key = false,
        }
    }
    if wrong_key {
        Err("made by a minisign key that is not an allowed signer".into())
    } else {
        Err("does not match the manifest: the manifest changed after it was signed, or the signature is damaged".into())
    }
}

fn verify_ssh(signers: &[AllowedSigner], manifest: &[u8], sig: &[u8]) -> Result<String, String> {
    let sig = ssh_key::SshSig::from_pem(sig).map_err(|e| format!("not an SSH signature: {e}"))?;
    if sig.namespace() != SSH_NAMESPACE {
        return Err(format!(
            "made for namespace {:?}, not {SSH_NAMESPACE:?} (sign with ssh-keygen -Y sign -n {SSH_NAMESPACE})",
            sig.namespace()
        ));
    }
    let keys: Vec<(&String, &ssh_key::PublicKey)> = signers
        .iter()
        .filter_map(|s| match s {
            AllowedSigner::Ssh { name, key } => Some((name, key)),
            AllowedSigner::Minisign { .. } => None,
        })
        .collect();
    if keys.is_empty() {
        return Err("no SSH key is an allowed signer".into());
    }
    let signer_fp = sig.public_key().fingerprint(ssh_key::HashAlg::Sha256);
    for (name, key) in &keys {
        if key.key_data() != sig.public_key() {
            continue;
        }
        return match key.verify(SSH_NAMESPACE, manifest, &sig) {
            Ok(()) => Ok((*name).clone()),
            Err(ssh_key::Error::AlgorithmUnsupported { algorithm }) => Err(format!(
                "made with a {algorithm} key, which warden cannot verify (use an Ed25519 key)"
            )),
            Err(_) => Err(format!(
                "made by {name} but does not match the manifest: the manifest changed after it was signed, or the signature is damaged"
            )),
        };
    }
    Err(format!(
        "made by the SSH key {signer_fp}, which is not an allowed signer"
    ))
}

/// `sha256sum` lines: path → lowercase hex digest. Any malformed line, a path that is not a
/// plain relative path, or a path listed twice is an error.
fn parse_manifest(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, String>, SignatureError> {
    let bad = |line: usize, reason: String| SignatureError::Manifest {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| bad(0, "not UTF-8 text".into()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (digest, rest) = line
            .split_at_checked(64)
            .ok_or_else(|| bad(n, "expected `<64 hex digits>  <path>`".into()))?;
        if !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(n, "the digest is not 64 hex digits".into()));
        }
        let file = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .ok_or_else(|| {
                bad(
                    n,
                    "expected two spaces between the digest and the path".into(),
                )
            })?;
        let file = file.strip_prefix("./").unwrap_or(file);
        if file.starts_with("~/") {
            return Err(bad(
                n,
                format!("{file}: only repository files can be listed"),
            ));
        }
        check_key(file).map_err(|r| bad(n, format!("{file}: {r}")))?;
        if out
            .insert(file.to_string(), digest.to_ascii_lowercase())
            .is_some()
        {
            return Err(bad(n, format!("{file} is listed twice")));
        }
    }
    Ok(out)
}
