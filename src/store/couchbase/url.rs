//! What a `couchbase://` or `couchbases://` store URL says: the connection string and
//! credentials for the SDK, the bucket, scope, collection and key prefix for Geyser, the
//! timeouts, and the URL as errors and logs may show it (never with its password).
//! Pure parsing: touches no network.

use std::time::Duration;

use crate::store::url_parts::{percent_decoded, seconds};

/// The key prefix when the URL names none: documents are keyed `geyser::UUID`.
pub const DEFAULT_PREFIX: &str = "geyser";
/// The scope and the collection when the URL names none.
pub const DEFAULT_SCOPE: &str = "_default";
pub const DEFAULT_COLLECTION: &str = "_default";
/// How long opening the store may take before it gives up on the cluster.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one key-value call (get, insert, replace, remove) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one SQL++ query (list, list_stale, purge, index creation) may take.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The query parameters a store URL may carry (anything else is refused).
const PARAMETERS: &str = "prefix, scope, collection, connect_timeout, timeout, query_timeout";

/// A parsed store URL. Its `Debug` shows only the redacted URL.
#[derive(Clone, PartialEq)]
pub struct CouchbaseUrl {
    /// What the SDK connects to: scheme and hosts only (no credentials, bucket or parameters).
    pub connection_string: String,
    /// The URL with its password replaced by `***`: the only form that errors and logs show.
    pub redacted: String,
    pub username: String,
    password: String,
    pub bucket: String,
    pub scope: String,
    pub collection: String,
    /// Every key of this store starts with it, so applications can share a collection.
    pub prefix: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub query_timeout: Duration,
    /// The password as written in the URL and percent-decoded, to scrub from any message.
    secrets: Vec<String>,
}

impl std::fmt::Debug for CouchbaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CouchbaseUrl").field("url", &self.redacted).finish_non_exhaustive()
    }
}

impl CouchbaseUrl {
    /// The password, for the SDK's authenticator only.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `text` with every occurrence of the URL's password replaced by `***`: for messages
    /// that come from elsewhere (the SDK, the server) before they reach an error or a log.
    pub fn scrub(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_owned(), |text, secret| text.replace(secret.as_str(), "***"))
    }

    /// The collection's full name for SQL++ (each part checked to need no escaping).
    pub fn keyspace(&self) -> String {
        format!("`{}`.`{}`.`{}`", self.bucket, self.scope, self.collection)
    }
}

/// `url` with the password of its user info (`couchbase://user:PASSWORD@host`) and the value
/// of any `password` parameter replaced by `***`. Works on any text, parsable or not, so that
/// even a URL refused as malformed is safe to show.
pub fn redact(url: &str) -> String {
    let url = crate::drivers::redact(url);
    let Some((base, query)) = url.split_once('?') else { return url };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// Parses `couchbase://USER:PASSWORD@HOST[:PORT][,HOST[:PORT]...]/BUCKET[?PARAMETERS]`
/// (`couchbases://` for TLS). The error says what is wrong; it never contains the password.
pub fn parse(url: &str) -> Result<CouchbaseUrl, String> {
    let redacted = redact(url);
    let (scheme, rest) = url.split_once("://").ok_or("expected couchbase://USER:PASSWORD@HOST/BUCKET")?;
    if !matches!(scheme, "couchbase" | "couchbases") {
        return Err(format!("scheme {scheme:?} is not couchbase or couchbases"));
    }
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    if rest.contains('#') {
        return Err("a store URL has no #fragment".into());
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = authority
        .rsplit_once('@')
        .ok_or("no user (expected couchbase://USER:PASSWORD@HOST/BUCKET: Couchbase has no anonymous access)")?;
    let (username, password) = userinfo.split_once(':').ok_or("the user has no password (expected USER:PASSWORD@)")?;
    let (username, password) = (percent_decoded(username), percent_decoded(password));
    if username.is_empty() || password.is_empty() {
        return Err("the user name and the password may not be empty".into());
    }
    check_hosts(hosts)?;
    let bucket = path.trim_end_matches('/');
    if bucket.is_empty() {
        return Err("no bucket (expected couchbase://USER:PASSWORD@HOST/BUCKET)".into());
    }
    name("bucket", bucket, "._%-")?;
    let mut out = CouchbaseUrl {
        connection_string: format!("{scheme}://{hosts}"),
        redacted,
        username,
        password: password.clone(),
        bucket: bucket.to_owned(),
        scope: DEFAULT_SCOPE.to_owned(),
        collection: DEFAULT_COLLECTION.to_owned(),
        prefix: DEFAULT_PREFIX.to_owned(),
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        timeout: DEFAULT_TIMEOUT,
        query_timeout: DEFAULT_QUERY_TIMEOUT,
        secrets: Vec::new(),
    };
    let written = userinfo.split_once(':').map(|(_, p)| p.to_owned()).unwrap_or_default();
    out.secrets = vec![written, password];
    // Longest first, so that the decoded form never leaves part of the encoded one behind.
    out.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.secrets.dedup();
    for (key, value) in ::url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "prefix" => out.prefix = name("prefix", &value, "_-")?,
            "scope" => out.scope = name("scope", &value, "_%-")?,
            "collection" => out.collection = name("collection", &value, "_%-")?,
            "connect_timeout" => out.connect_timeout = seconds(&key, &value)?,
            "timeout" => out.timeout = seconds(&key, &value)?,
            "query_timeout" => out.query_timeout = seconds(&key, &value)?,
            "password" => return Err("the password goes in the user info (USER:PASSWORD@HOST), not a parameter".into()),
            other => return Err(format!("unknown parameter {other:?} (known: {PARAMETERS})")),
        }
    }
    Ok(out)
}

/// `HOST[:PORT]` entries separated by commas, each with a host and at most a numeric port.
fn check_hosts(hosts: &str) -> Result<(), String> {
    if hosts.is_empty() {
        return Err("no host (expected e.g. couchbase://USER:PASSWORD@127.0.0.1/BUCKET)".into());
    }
    for host in hosts.split(',') {
        let (name, port) = match host.strip_prefix('[') {
            Some(v6) => {
                let (addr, after) = v6.split_once(']').ok_or(format!("host {host:?}: unclosed ["))?;
                (addr, after.strip_prefix(':'))
            }
            None => match host.rsplit_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (host, None),
            },
        };
        let bad_char = |c: char| !(c.is_ascii_alphanumeric() || ".-_:".contains(c));
        if name.is_empty() || name.contains(bad_char) {
            return Err(format!("host {host:?} is not a host name or address"));
        }
        if port.is_some_and(|p| p.parse::<u16>().is_err()) {
            return Err(format!("host {host:?}: the port is not a number up to 65535"));
        }
    }
    Ok(())
}

/// A bucket, scope, collection or prefix name: letters, digits and `extra`, so that it needs
/// no quoting inside a key, a SQL++ name or an index name.
fn name(what: &str, value: &str, extra: &str) -> Result<String, String> {
    if value.is_empty()
        || value.len() > 100
        || value.contains(|c: char| !(c.is_ascii_alphanumeric() || extra.contains(c)))
    {
        return Err(format!("{what} {value:?} must be 1 to 100 of letters, digits and {extra:?}"));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_wherever_it_is_written() {
        assert_eq!(redact("couchbase://app:s3cret@db/jobs"), "couchbase://app:***@db/jobs");
        assert_eq!(
            redact("couchbases://app:p%40ss@h1,h2:11207/b?scope=s"),
            "couchbases://app:***@h1,h2:11207/b?scope=s"
        );
        assert_eq!(redact("couchbase://h/b?password=s3cret&prefix=p"), "couchbase://h/b?password=***&prefix=p");
        assert_eq!(redact("couchbase://app@h/b"), "couchbase://app@h/b");
        assert_eq!(redact("not a url :s3cret@"), "not a url :s3cret@");
    }

    #[test]
    fn defaults_and_parameters() {
        let u = parse("couchbase://app:pw@127.0.0.1/jobs").unwrap();
        assert_eq!(u.connection_string, "couchbase://127.0.0.1");
        assert_eq!((u.username.as_str(), u.password(), u.bucket.as_str()), ("app", "pw", "jobs"));
        assert_eq!((u.scope.as_str(), u.collection.as_str(), u.prefix.as_str()), ("_default", "_default", "geyser"));
        assert_eq!(
            (u.connect_timeout, u.timeout, u.query_timeout),
            (DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, DEFAULT_QUERY_TIMEOUT)
        );
        assert_eq!(u.keyspace(), "`jobs`.`_default`.`_default`");
        let u = parse(
            "couchbases://app:p%40ss@h1:11207,[::1]:11207/jobs?scope=geyser&collection=docs&prefix=app-1\
             &connect_timeout=0.5&timeout=2&query_timeout=60",
        )
        .unwrap();
        assert_eq!(u.connection_string, "couchbases://h1:11207,[::1]:11207");
        assert_eq!(u.password(), "p@ss");
        assert_eq!(u.keyspace(), "`jobs`.`geyser`.`docs`");
        assert_eq!(u.prefix, "app-1");
        assert_eq!(
            (u.connect_timeout, u.timeout, u.query_timeout),
            (Duration::from_millis(500), Duration::from_secs(2), Duration::from_secs(60))
        );
    }

    #[test]
    fn scrub_removes_the_password_in_both_spellings() {
        let u = parse("couchbase://app:p%40ss%2Fw0rd@h/b").unwrap();
        assert_eq!(u.scrub("auth p@ss/w0rd failed; url had p%40ss%2Fw0rd"), "auth *** failed; url had ***");
        assert!(!format!("{u:?}").contains("w0rd"), "{u:?}");
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_password() {
        for (url, says) in [
            ("couchbase://app:s3cret@h/b?db=1", "unknown parameter \"db\""),
            ("couchbase://app:s3cret@h/b?password=s3cret", "goes in the user info"),
            ("couchbase://app:s3cret@h/", "no bucket"),
            ("couchbase://app:s3cret@h/b`x", "bucket"),
            ("couchbase://app:s3cret@h/b?collection=a.b", "collection"),
            ("couchbase://app:s3cret@h/b?prefix=a:b", "prefix"),
            ("couchbase://app:s3cret@h/b?timeout=0", "timeout"),
            ("couchbase://app:s3cret@h:port/b", "port"),
            ("couchbase://app:s3cret@/b", "no host"),
            ("couchbase://h/b", "no user"),
            ("couchbase://app@h/b", "no password"),
            ("couchbase2://app:s3cret@h/b", "not couchbase"),
            ("couchbase://app:s3cret@h/b#x", "fragment"),
        ] {
            let err = parse(url).expect_err(url);
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("s3cret"), "{url}: {err}");
        }
    }
}
