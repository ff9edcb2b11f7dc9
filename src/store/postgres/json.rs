//! A document's JSON text as it crosses the wire to and from a `jsonb` column: written in a
//! form jsonb gives back unchanged, read back as bytes so that parsing (and the `Corrupt`
//! error naming the job) stays with the store. Touches nothing but the bytes it is given.

use std::error::Error;
use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};
use tokio_postgres::types::private::BytesMut;

use crate::model::JobDocument;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// The binary format of `jsonb` is a version byte, then the JSON text.
const JSONB_VERSION: u8 = 1;

/// JSON text, borrowed: a parameter for a `jsonb` or `json` column, or a value read from one.
#[derive(Debug, Clone, Copy)]
pub struct JsonText<'a>(pub &'a [u8]);

impl<'a> FromSql<'a> for JsonText<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        if *ty != Type::JSONB {
            return Ok(JsonText(raw));
        }
        match raw.split_first() {
            Some((&JSONB_VERSION, text)) => Ok(JsonText(text)),
            Some((version, _)) => Err(format!("unsupported jsonb format version {version}").into()),
            None => Err("empty jsonb value".into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }
}

impl ToSql for JsonText<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&[JSONB_VERSION]);
        }
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }

    to_sql_checked!();
}

/// Writes floats so that jsonb, which keeps a number as a decimal and prints it without an
/// exponent, gives back a float: serde_json writes 1e16 and above (all whole numbers) as
/// `1e16`, which jsonb would print as the integer `10000000000000000`; written out with a
/// `.0` it stays a float. Smaller numbers keep serde_json's shortest round-trip digits, which
/// jsonb keeps digit for digit (`1e-7` comes back as `0.0000001`, the same `f64`).
struct DecimalFloats;

/// Where serde_json's float output switches to an exponent for large numbers.
const EXPONENT_FROM: f64 = 1e16;

impl Formatter for DecimalFloats {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        if value.is_finite() && value.abs() >= EXPONENT_FROM {
            write!(writer, "{value:.1}")
        } else {
            CompactFormatter.write_f64(writer, value)
        }
    }
}

/// The document as JSON text for its `jsonb` column.
pub fn document_json(doc: &JobDocument) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(512);
    doc.serialize(&mut serde_json::Serializer::with_formatter(&mut out, DecimalFloats))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_floats_are_written_without_an_exponent() {
        let mut out = Vec::new();
        for value in [1e16, -2.5e300, 123.25, 1e-7, 1e15] {
            out.clear();
            DecimalFloats.write_f64(&mut out, value).expect("write");
            let text = String::from_utf8(out.clone()).expect("utf-8");
            assert_eq!(text.parse::<f64>().expect("a number").to_bits(), value.to_bits(), "{text}");
            assert!(value.abs() < EXPONENT_FROM || (text.ends_with(".0") && !text.contains('e')), "{text}");
        }
    }
}
