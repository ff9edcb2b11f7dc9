//! The PostgreSQL store's URL: `postgresql://user[:password]@host[:port]/database[?schema=NAME&...]`
//! (also `postgres://`), parsed into a driver config plus Geyser's own parameters (and the TLS
//! that `sslmode` and `sslrootcert` ask for, as libpq reads them), and the URL as it may be
//! shown in messages (its password replaced). Touches no connection and no file.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::SslMode;

use crate::store::url_parts::percent_decoded;

/// Where Geyser's tables live when the URL names no schema.
pub const DEFAULT_SCHEMA: &str = "geyser";
/// How long connecting may take (TCP and startup) when the URL does not say.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many connections one process keeps at most when the URL does not say.
pub const DEFAULT_POOL_SIZE: usize = 16;

const PARAMETERS: &str = "schema=NAME, connect_timeout=SECONDS, pool_size=N, \
     sslmode=disable|prefer|require|verify-ca|verify-full and sslrootcert=PATH|system";

/// Which certificates a verified connection trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's trusted roots (`sslrootcert=system`, or none named).
    System,
    /// The PEM certificates in this file (`sslrootcert=PATH`), e.g. a private CA.
    File(PathBuf),
}

/// The TLS the store's connections use, from the URL's `sslmode` and `sslrootcert`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// `sslmode=disable`: plain TCP.
    Off,
    /// `prefer` (TLS when the server offers it, else plain) or `require` (TLS or fail) with no
    /// `sslrootcert`: encrypted, but the server's certificate is not checked.
    Unchecked { required: bool },
    /// TLS or fail, and the server's certificate must chain to `roots`; with `check_name` it
    /// must also be issued for the host the URL names (`verify-full`; `verify-ca` does not check
    /// the name, nor does `require` with an `sslrootcert`, as in libpq).
    Verified { roots: Roots, check_name: bool },
}

/// A parsed store URL.
#[derive(Debug)]
pub struct StoreUrl {
    /// The URL with its password hidden, for messages.
    pub redacted: String,
    pub schema: String,
    pub connect_timeout: Duration,
    pub pool_size: usize,
    pub tls: Tls,
    pub pg: tokio_postgres::Config,
}

/// The URL with any password replaced by `***`: the one in `user:password@` and a
/// `password=` query parameter. When unsure where the user part ends it hides more, never less.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let rest = match rest.rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{}:***{}", &rest[..colon], &rest[at..]),
            None => rest.to_owned(),
        },
        None => rest.to_owned(),
    };
    let rest = match rest.split_once('?') {
        Some((base, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{base}?{}", pairs.join("&"))
        }
        None => rest,
    };
    format!("{scheme}{rest}")
}

/// A schema name Geyser accepts: lower-case ASCII letters, digits and `_`, not starting with a
/// digit or `pg_`, at most 63 bytes (PostgreSQL's limit), so it never needs quoting rules.
fn check_schema(name: &str) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
        && !name.starts_with("pg_");
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "schema {name:?} is not a schema name Geyser uses: lower-case letters, digits and _, \
             at most 63 characters, not starting with a digit or pg_"
        ))
    }
}

fn positive<T: FromStr + PartialOrd + Default>(key: &str, value: &str) -> Result<T, String> {
    match value.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(format!("{key}={value:?} is not a positive whole number")),
    }
}

/// The TLS `sslmode` and `sslrootcert` ask for. No `sslmode` means `prefer`, as in libpq, but
/// an `sslrootcert` alone means `verify-full`: whoever names a CA wants it checked. A CA with
/// `disable` or `prefer` (which never check a certificate) is refused rather than ignored.
fn tls(mode: Option<&str>, root_cert: Option<&str>) -> Result<Tls, String> {
    let roots = match root_cert {
        None => None,
        Some("") => return Err("sslrootcert is empty; give the path of a PEM file, or system".into()),
        Some("system") => Some(Roots::System),
        Some(path) => Some(Roots::File(PathBuf::from(percent_decoded(path)))),
    };
    Ok(match (mode, roots) {
        (Some("disable"), None) => Tls::Off,
        (None | Some("prefer"), None) => Tls::Unchecked { required: false },
        (Some("require"), None) => Tls::Unchecked { required: true },
        (Some("require" | "verify-ca"), roots) => {
            Tls::Verified { roots: roots.unwrap_or(Roots::System), check_name: false }
        }
        (None | Some("verify-full"), roots) => {
            Tls::Verified { roots: roots.unwrap_or(Roots::System), check_name: true }
        }
        (Some(mode @ ("disable" | "prefer")), Some(_)) => {
            return Err(format!(
                "sslrootcert is given but sslmode={mode} never checks a certificate; \
                 use sslmode=verify-full (or verify-ca, or require)"
            ))
        }
        (Some(mode), _) => {
            return Err(format!("sslmode={mode:?} is not one of disable, prefer, require, verify-ca, verify-full"))
        }
    })
}

/// Parses a `postgresql://` or `postgres://` URL. The error says what is wrong without
/// repeating the URL (the caller names it, redacted) and never quotes a password.
pub fn parse(url: &str) -> Result<StoreUrl, String> {
    if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
        return Err("expected postgresql://user@host:port/database".into());
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut schema = None;
    let mut connect_timeout = None;
    let mut pool_size = None;
    let mut ssl_mode = None;
    let mut root_cert = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let seen = match key {
            "schema" => schema.replace(value.to_owned()).is_some(),
            "connect_timeout" => connect_timeout.replace(Duration::from_secs(positive(key, value)?)).is_some(),
            "pool_size" => pool_size.replace(positive::<usize>(key, value)?).is_some(),
            "sslmode" => ssl_mode.replace(value).is_some(),
            "sslrootcert" => root_cert.replace(value).is_some(),
            _ => return Err(format!("unknown parameter {key:?}; a Geyser PostgreSQL URL takes {PARAMETERS}")),
        };
        if seen {
            return Err(format!("parameter {key:?} is given twice"));
        }
    }
    let schema = schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
    check_schema(&schema)?;
    let tls = tls(ssl_mode, root_cert)?;
    let connect_timeout = connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let mut pg = tokio_postgres::Config::from_str(base).map_err(|e| e.to_string())?;
    if pg.get_user().is_none() {
        // As libpq does: the operating system's user name.
        if let Ok(user) = std::env::var("USER") {
            pg.user(user);
        }
    }
    if pg.get_application_name().is_none() {
        pg.application_name("geyser");
    }
    pg.connect_timeout(connect_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3)
        .ssl_mode(match tls {
            Tls::Off => SslMode::Disable,
            Tls::Unchecked { required: false } => SslMode::Prefer,
            Tls::Unchecked { required: true } | Tls::Verified { .. } => SslMode::Require,
        });
    Ok(StoreUrl {
        redacted: redact(url),
        schema,
        connect_timeout,
        pool_size: pool_size.unwrap_or(DEFAULT_POOL_SIZE),
        tls,
        pg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        let cases = [
            (
                "postgresql://alice:s3cr3t@db.example:5432/app?schema=x",
                "postgresql://alice:***@db.example:5432/app?schema=x",
            ),
            ("postgres://alice:p@ss:w@host/db", "postgres://alice:***@host/db"),
            ("postgresql://host/db?password=hunter2&schema=x", "postgresql://host/db?password=***&schema=x"),
            ("postgresql://bob@host:5432/db", "postgresql://bob@host:5432/db"),
            ("postgresql://host:5432/db", "postgresql://host:5432/db"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn parameters_are_checked() {
        let url = parse("postgresql://u@h:5/d?schema=app_1&connect_timeout=2&pool_size=3").expect("valid");
        assert_eq!((url.schema.as_str(), url.connect_timeout, url.pool_size), ("app_1", Duration::from_secs(2), 3));
        assert_eq!(parse("postgres://u@h/d").expect("valid").schema, DEFAULT_SCHEMA);
        let refused = [
            ("postgresql://u@h/d?sslcert=client.pem", "unknown parameter \"sslcert\""),
            ("postgresql://u@h/d?sslmode=allow", "not one of disable, prefer"),
            ("postgresql://u@h/d?sslmode=require&sslmode=disable", "given twice"),
            ("postgresql://u@h/d?sslrootcert=", "sslrootcert is empty"),
            ("postgresql://u@h/d?sslmode=prefer&sslrootcert=ca.pem", "sslmode=prefer never checks"),
            ("postgresql://u@h/d?sslmode=disable&sslrootcert=ca.pem", "sslmode=disable never checks"),
            ("postgresql://u@h/d?schema=a&schema=b", "given twice"),
            ("postgresql://u@h/d?schema=My-App", "not a schema name"),
            ("postgresql://u@h/d?schema=pg_x", "not a schema name"),
            ("postgresql://u@h/d?connect_timeout=0", "not a positive whole number"),
            ("postgresql://u@h/d?pool_size=many", "not a positive whole number"),
            ("mysql://u@h/d", "expected postgresql://"),
        ];
        for (url, reason) in refused {
            let err = parse(url).expect_err(url);
            assert!(err.contains(reason), "{url}: {err}");
        }
    }

    #[test]
    fn sslmode_and_sslrootcert_choose_the_tls() {
        let file = |path: &str| Roots::File(PathBuf::from(path));
        let cases = [
            ("", Tls::Unchecked { required: false }, SslMode::Prefer),
            ("?sslmode=disable", Tls::Off, SslMode::Disable),
            ("?sslmode=prefer", Tls::Unchecked { required: false }, SslMode::Prefer),
            ("?sslmode=require", Tls::Unchecked { required: true }, SslMode::Require),
            (
                "?sslmode=require&sslrootcert=/ca.pem",
                Tls::Verified { roots: file("/ca.pem"), check_name: false },
                SslMode::Require,
            ),
            ("?sslmode=verify-ca", Tls::Verified { roots: Roots::System, check_name: false }, SslMode::Require),
            ("?sslmode=verify-full", Tls::Verified { roots: Roots::System, check_name: true }, SslMode::Require),
            (
                "?sslmode=verify-full&sslrootcert=system",
                Tls::Verified { roots: Roots::System, check_name: true },
                SslMode::Require,
            ),
            (
                "?sslrootcert=/etc/my%20ca.pem",
                Tls::Verified { roots: file("/etc/my ca.pem"), check_name: true },
                SslMode::Require,
            ),
        ];
        for (query, tls, mode) in cases {
            let url = parse(&format!("postgresql://u@h/d{query}")).expect(query);
            assert_eq!((&url.tls, url.pg.get_ssl_mode()), (&tls, mode), "{query}");
        }
    }

    #[test]
    fn errors_never_quote_a_password() {
        for url in ["postgresql://alice:hunter2@h/d?password=hunter2", "postgresql://alice:hunter2@h:notaport/d"] {
            let err = parse(url).expect_err(url);
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }
}
