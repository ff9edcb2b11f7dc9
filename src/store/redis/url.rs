//! What a `redis://` or `rediss://` store URL says: the server and db for the `redis` crate,
//! the key prefix, timeouts and CA file (`sslrootcert`) for Geyser, and the URL as errors and
//! logs may show it (never with its password). Pure parsing: touches no network and no file.

use std::path::PathBuf;
use std::time::Duration;

use crate::store::url_parts::{percent_decoded, seconds};

/// The key prefix when the URL names none.
pub const DEFAULT_PREFIX: &str = "geyser:";
/// How long opening a connection may take before the store gives up on the server.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one call may wait for the server's answer.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The query parameters a store URL may carry (anything else is refused).
const PARAMETERS: &str = "prefix, connect_timeout, response_timeout, sslrootcert (rediss:// only)";

/// A parsed store URL. Its `Debug` shows only the redacted URL.
#[derive(Clone, PartialEq)]
pub struct RedisUrl {
    /// The URL the `redis` crate connects to: the original without Geyser's parameters.
    pub server: String,
    /// The URL with its password replaced by `***`: the only form that errors and logs show.
    pub redacted: String,
    /// Every key of this store starts with it, so applications can share a server.
    pub prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// The PEM file of the CA(s) the server's certificate must chain to (`sslrootcert=PATH`,
    /// `rediss://` only) instead of the system's roots.
    pub root_cert: Option<PathBuf>,
    /// The password as written in the URL and percent-decoded, to scrub from any message.
    secrets: Vec<String>,
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUrl").field("url", &self.redacted).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisUrl {
    /// `text` with every occurrence of the URL's password replaced by `***`: for messages
    /// that come from elsewhere (the driver, the server) before they reach an error or a log.
    pub fn scrub(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_owned(), |text, secret| text.replace(secret.as_str(), "***"))
    }
}

/// `url` with the password of its user info (`redis://user:PASSWORD@host`) replaced by `***`.
/// Works on any text, parsable or not, so that even a URL refused as malformed is safe to show.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else { return url.to_owned() };
    let Some(colon) = authority[..at].find(':') else { return url.to_owned() };
    let password_start = authority_start + colon + 1;
    let password_end = authority_start + at;
    format!("{}***{}", &url[..password_start], &url[password_end..])
}

/// Parses a store URL: `redis://[user:password@]host[:port][/db][?prefix=P&connect_timeout=S&response_timeout=S]`
/// (`rediss://` for TLS, which may add `sslrootcert=PATH`). Parameter values are
/// percent-decoded as the other stores' are (`+` stays a plus, as in a path). The error says
/// what is wrong; it never contains the password.
pub fn parse(url: &str) -> Result<RedisUrl, String> {
    let redacted = redact(url);
    let mut parsed = ::url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "redis" | "rediss") {
        return Err(format!("scheme {:?} is not redis or rediss", parsed.scheme()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("no host (expected e.g. redis://127.0.0.1:6379/0)".into());
    }
    let db = parsed.path().trim_matches('/');
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(format!("the path {db:?} is not a database number (expected e.g. /0)"));
    }
    let mut out = RedisUrl {
        server: String::new(),
        redacted,
        prefix: DEFAULT_PREFIX.to_owned(),
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        root_cert: None,
        secrets: Vec::new(),
    };
    if let Some(password) = parsed.password().filter(|p| !p.is_empty()) {
        out.secrets = vec![password.to_owned(), percent_decoded(password)];
        // Longest first, so that the decoded form never leaves part of the encoded one behind.
        out.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out.secrets.dedup();
    }
    for pair in parsed.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decoded(value);
        match name {
            "prefix" if value.is_empty() => return Err("prefix may not be empty".into()),
            "prefix" => out.prefix = value,
            "connect_timeout" => out.connect_timeout = seconds(name, &value)?,
            "response_timeout" => out.response_timeout = seconds(name, &value)?,
            "sslrootcert" if value.is_empty() => {
                return Err("sslrootcert is empty; give the path of a PEM file of the CA".into())
            }
            "sslrootcert" if out.root_cert.replace(PathBuf::from(value)).is_some() => {
                return Err("parameter \"sslrootcert\" is given twice".into())
            }
            "sslrootcert" => {}
            other => return Err(format!("unknown parameter {other:?} (known: {PARAMETERS})")),
        }
    }
    if let Some(path) = &out.root_cert {
        let shown = path.display();
        if parsed.scheme() == "redis" {
            return Err(format!("sslrootcert={shown} names a CA but redis:// is plain text; use rediss:// for TLS"));
        }
        if parsed.fragment() == Some("insecure") {
            return Err(format!(
                "sslrootcert={shown} asks for the certificate to be checked but #insecure for it not to be; \
                 drop one of them"
            ));
        }
    }
    parsed.set_query(None);
    out.server = parsed.into();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(redact("redis://:secret@host:6379/0"), "redis://:***@host:6379/0");
        assert_eq!(redact("rediss://user:p%40ss@host/1?prefix=a:"), "rediss://user:***@host/1?prefix=a:");
        assert_eq!(redact("redis://user:pa@ss@host"), "redis://user:***@host", "the last @ ends the user info");
        assert_eq!(redact("redis://user@host/0"), "redis://user@host/0");
        assert_eq!(redact("redis://host/0?prefix=a@b:c"), "redis://host/0?prefix=a@b:c");
        assert_eq!(redact("not a url :secret@"), "not a url :secret@");
    }

    #[test]
    fn defaults_and_parameters() {
        let u = parse("redis://127.0.0.1:6379/2").unwrap();
        assert_eq!((u.server.as_str(), u.prefix.as_str()), ("redis://127.0.0.1:6379/2", DEFAULT_PREFIX));
        assert_eq!((u.connect_timeout, u.response_timeout), (DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT));
        let u = parse("redis://:pw@h/0?prefix=app%3A&connect_timeout=0.5&response_timeout=2").unwrap();
        assert_eq!((u.server.as_str(), u.prefix.as_str()), ("redis://:pw@h/0", "app:"));
        assert_eq!((u.connect_timeout, u.response_timeout), (Duration::from_millis(500), Duration::from_secs(2)));
        assert_eq!(u.redacted, "redis://:***@h/0?prefix=app%3A&connect_timeout=0.5&response_timeout=2");
        assert_eq!(u.root_cert, None);
    }

    #[test]
    fn sslrootcert_names_a_ca_file_for_rediss() {
        let u = parse("rediss://:pw@h:6380/0?prefix=p:&sslrootcert=/etc/geyser/redis%20ca+1.pem").unwrap();
        assert_eq!(u.root_cert, Some(PathBuf::from("/etc/geyser/redis ca+1.pem")));
        assert_eq!((u.server.as_str(), u.prefix.as_str()), ("rediss://:pw@h:6380/0", "p:"));
        assert!(u.redacted.ends_with("sslrootcert=/etc/geyser/redis%20ca+1.pem") && !u.redacted.contains("pw"));
    }

    #[test]
    fn scrub_removes_the_password_in_both_spellings() {
        let u = parse("redis://user:p%40ss%2Fw0rd@h/0").unwrap();
        let text = "auth p@ss/w0rd failed; url had p%40ss%2Fw0rd";
        assert_eq!(u.scrub(text), "auth *** failed; url had ***");
        assert!(!format!("{u:?}").contains("w0rd"), "{u:?}");
        let plain = parse("redis://h/0").unwrap();
        assert_eq!(plain.scrub(text), text, "nothing to scrub without a password");
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_password() {
        for (url, says) in [
            ("redis://:secret@h/0?db=1", "unknown parameter \"db\""),
            ("redis://:secret@h/zero", "not a database number"),
            ("redis://:secret@h/0?connect_timeout=-1", "connect_timeout"),
            ("redis://:secret@h/0?prefix=", "prefix may not be empty"),
            ("redis://:secret@/0", "host"),
            ("http://:secret@h/0", "not redis"),
            ("redis://:secret@h/0?sslrootcert=/ca.pem", "sslrootcert=/ca.pem names a CA but redis:// is plain text"),
            ("rediss://:secret@h/0?sslrootcert=/ca.pem#insecure", "sslrootcert=/ca.pem asks for the certificate"),
            ("rediss://:secret@h/0?sslrootcert=", "sslrootcert is empty"),
            ("rediss://:secret@h/0?sslrootcert=/a.pem&sslrootcert=/b.pem", "\"sslrootcert\" is given twice"),
        ] {
            let err = parse(url).expect_err(url);
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("secret"), "{url}: {err}");
        }
    }
}
