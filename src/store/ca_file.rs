//! The CA file a store URL names with `sslrootcert`: read and checked once for every store that
//! speaks TLS, so a missing, unreadable or non-PEM file is refused with the parameter and path
//! named before any connection is tried. Reads that one file (blocking); makes no connection.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// The certificates in the PEM file `path`, as trusted roots, and the file's text (a driver
/// that parses the PEM itself takes the text); an error names `sslrootcert=PATH` and what is
/// wrong with it.
pub fn read(path: &Path) -> Result<(RootCertStore, Vec<u8>), String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("sslrootcert={shown}: cannot read it: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("sslrootcert={shown}: not a PEM certificate file: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert={shown}: a certificate in it cannot be a trusted root: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert={shown}: the file holds no PEM certificate"));
    }
    Ok((roots, pem))
}
