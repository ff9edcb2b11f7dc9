//! TLS for the PostgreSQL store's connections: the rustls client configuration (ring provider)
//! that a URL's `sslmode` and `sslrootcert` ask for, with its trusted roots read from the
//! `sslrootcert` file or the system's store (rustls-native-certs, as the Redis store uses), and
//! what a failed TLS connection means, in words. Reads the CA file; makes no connection.

use std::error::Error;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::url::{Roots, Tls};
use crate::store::ca_file;

/// What tokio-postgres says when the server answers the TLS request with "no".
const SERVER_REFUSED_TLS: &str = "server does not support TLS";

/// The rustls configuration for `tls`, or `None` for plain TCP. The error says which file or
/// which store of roots could not be used.
pub fn client_config(tls: &Tls) -> Result<Option<ClientConfig>, String> {
    let (roots, check_name) = match tls {
        Tls::Off => return Ok(None),
        Tls::Unchecked { .. } => (None, false),
        Tls::Verified { roots, check_name } => (Some(load_roots(roots)?), *check_name),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let chain = match roots {
        None => None,
        Some(roots) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("TLS set-up: {e}"))?,
        ),
    };
    Ok(Some(match (chain, check_name) {
        (Some(chain), true) => builder.with_webpki_verifier(chain).with_no_client_auth(),
        (chain, _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName { chain, algorithms }))
            .with_no_client_auth(),
    }))
}

/// The certificates `roots` names, as a store rustls verifies against.
fn load_roots(roots: &Roots) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => store = ca_file::read(path)?.0,
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "no trusted root certificate found on this system ({}); name a CA file with sslrootcert=PATH",
                    if why.is_empty() { "the store is empty".to_owned() } else { why.join("; ") }
                ));
            }
        }
    }
    Ok(store)
}

/// The certificate check when no host name is checked: `prefer` and `require` without a CA
/// (`chain` None: any certificate, so the link is encrypted but the server not authenticated,
/// as in libpq), and `verify-ca` or `require` with a CA (the certificate must chain to a trusted
/// root and be valid now, whatever host name it was issued for). Either way the handshake's
/// signatures are checked against the certificate the server sent.
#[derive(Debug)]
struct AnyName {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        // The name is checked only once the chain has been (rustls checks it last), so a name
        // mismatch here means everything else about the certificate is good.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What went wrong, in words, when `e` (or one of its causes) is a TLS failure: the server
/// refused TLS, or the handshake failed, and then why (untrusted, wrong name, out of date).
pub fn explain(e: &(dyn Error + 'static)) -> Option<String> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.to_string() == SERVER_REFUSED_TLS {
            return Some(
                "TLS: the server does not support SSL (ssl = off in its postgresql.conf), and the URL's \
                 sslmode requires it"
                    .into(),
            );
        }
        // tokio-rustls hands the rustls error over inside an io::Error, whose `source` skips it.
        let inner = c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).map(|e| e as &(dyn Error + 'static));
        if let Some(tls) = inner.or(Some(c)).and_then(|e| e.downcast_ref::<rustls::Error>()) {
            return Some(handshake_failure(tls));
        }
        cause = c.source();
    }
    None
}

fn handshake_failure(e: &rustls::Error) -> String {
    use CertificateError::*;
    let why = match e {
        rustls::Error::InvalidCertificate(UnknownIssuer) => {
            "untrusted certificate: it is not signed by the CA in sslrootcert (or, when the URL names none, \
             by a root this system trusts)"
        }
        rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. }) => {
            "name mismatch: the server's certificate is not issued for the host the URL names \
             (sslmode=verify-full checks the name, verify-ca does not)"
        }
        rustls::Error::InvalidCertificate(
            Expired | ExpiredContext { .. } | NotValidYet | NotValidYetContext { .. },
        ) => "the server's certificate is expired or not valid yet",
        rustls::Error::InvalidCertificate(_) => "the server's certificate was refused",
        _ => "the TLS handshake with the server failed",
    };
    format!("TLS: {why}")
}
