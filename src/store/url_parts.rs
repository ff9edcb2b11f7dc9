//! Pieces of a store URL that every network store reads alike: `%XX` escapes in a user
//! name, password or parameter, and a positive number of seconds. Pure text; touches nothing.

use std::time::Duration;

/// `%XX` sequences of a URL part turned back into the bytes they stand for (a password or a
/// path may hold a `@`, a space or a `&` only so); a `%` not followed by two hex digits is kept.
pub fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A positive number of seconds, as a URL parameter `name=value` gives it.
pub fn seconds(name: &str, value: &str) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{name}={value:?} is not a positive number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_decoded_and_stray_percent_signs_kept() {
        assert_eq!(percent_decoded("p%40ss%20word"), "p@ss word");
        assert_eq!(percent_decoded("100%"), "100%");
        assert_eq!(percent_decoded("%zz+"), "%zz+");
    }

    #[test]
    fn seconds_must_be_positive_and_finite() {
        assert_eq!(seconds("t", "1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "-1", "nan", "inf", "soon"] {
            assert!(seconds("t", bad).unwrap_err().contains(&format!("t={bad:?}")));
        }
    }
}
