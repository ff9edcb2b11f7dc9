//! The CA file a `rediss://` URL names with `sslrootcert`: read and checked here, so that a
//! missing, unreadable or non-PEM file is refused with the parameter and path named before any
//! connection is tried. Reads that one file; makes no connection.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// The PEM text of `path`, once every certificate in it has been found usable as a trusted
/// root (the `redis` crate parses it again, with less telling errors). Blocking file I/O.
pub fn root_cert_pem(path: &Path) -> Result<Vec<u8>, String> {
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
    Ok(pem)
}
