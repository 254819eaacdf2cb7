//! `keel` refuses a TLS setup it cannot serve before anything listens, in one line:
//! https without certificates, a certificate that does not name the advertised host,
//! an unreadable or invalid PEM file.

use std::ffi::OsString;
use std::path::Path;

use rcgen::{CertificateParams, KeyPair};

/// A self-signed certificate for `hosts`, written to `dir/name.crt` and `dir/name.key`.
fn self_signed(dir: &Path, name: &str, hosts: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let c = dir.join(format!("{name}.crt"));
    let k = dir.join(format!("{name}.key"));
    std::fs::write(&c, cert.pem()).expect("write");
    std::fs::write(&k, key.serialize_pem()).expect("write");
    (c.display().to_string(), k.display().to_string())
}

/// What `keel` says when started with `flags` (TLS on a single member's client URL).
fn start_error(dir: &Path, flags: &[&str]) -> String {
    let data = dir.join("data").display().to_string();
    let mut args: Vec<OsString> = [
        "keel",
        "--name",
        "t",
        "--data-dir",
        &data,
        "--listen-client-urls",
        "https://127.0.0.1:0",
        "--advertise-client-urls",
        "https://127.0.0.1:2379",
        "--listen-peer-urls",
        "http://127.0.0.1:0",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2380",
        "--initial-cluster",
        "t=http://127.0.0.1:2380",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.extend(flags.iter().map(OsString::from));
    keel_server::launch::main(args).expect_err("the start is refused")
}

#[test]
fn https_without_certificates_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        start_error(dir.path(), &[]),
        "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:0 with HTTPS scheme"
    );
}

#[test]
fn a_certificate_not_covering_the_advertised_host_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path(), "elsewhere", &["elsewhere.example", "10.0.0.7"]);
    assert_eq!(
        start_error(dir.path(), &["--cert-file", &cert, "--key-file", &key]),
        format!("--cert-file {cert}: x509: certificate is valid for elsewhere.example, 10.0.0.7, not 127.0.0.1 (the host of --advertise-client-urls https://127.0.0.1:2379)")
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn unreadable_and_invalid_pem_files_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path(), "good", &["127.0.0.1"]);
    let missing = dir.path().join("missing.key").display().to_string();
    let e = start_error(dir.path(), &["--cert-file", &cert, "--key-file", &missing]);
    assert!(
        e.starts_with(&format!("--key-file {missing}: cannot read: ")),
        "{e}"
    );
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let garbage = garbage.display().to_string();
    let e = start_error(
        dir.path(),
        &[
            "--cert-file",
            &cert,
            "--key-file",
            &key,
            "--trusted-ca-file",
            &garbage,
            "--client-cert-auth",
        ],
    );
    assert!(
        e.starts_with(&format!("--trusted-ca-file {garbage}: invalid PEM")),
        "{e}"
    );
}
