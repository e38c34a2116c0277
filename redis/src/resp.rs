//! A bounded RESP2 reader for the pub/sub connection: what Redis pushes there
//! (subscribe confirmations, messages, pongs) is small arrays of bulk
//! strings. Its own reader, not redis-rs's, so a bulk past
//! [`crate::envelope::MAX_ENVELOPE`] is skipped without being buffered and
//! memory stays bounded whatever arrives.

use std::io::{self, BufRead, Read, Write};

use crate::envelope::MAX_ENVELOPE;

/// Longest status, error or length line accepted.
const MAX_LINE: u64 = 64 * 1024;
/// Longest array accepted (pub/sub pushes have 3 or 4 elements).
const MAX_ARRAY: i64 = 64;

/// One RESP2 value.
#[derive(Debug, PartialEq)]
pub(crate) enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// A bulk string longer than the limit, skipped unread.
    TooBig,
    Nil,
    Array(Vec<Resp>),
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad RESP: {what}"))
}

fn line(r: &mut impl BufRead) -> io::Result<String> {
    let mut buf = Vec::new();
    r.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf)?;
    if buf.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if !buf.ends_with(b"\r\n") {
        return Err(invalid("line too long or cut"));
    }
    buf.truncate(buf.len() - 2);
    String::from_utf8(buf).map_err(|_| invalid("line not UTF-8"))
}

fn number(s: &str) -> io::Result<i64> {
    s.parse().map_err(|_| invalid("bad number"))
}

/// Reads one value (arrays nest at most one level below the top).
pub(crate) fn read(r: &mut impl BufRead) -> io::Result<Resp> {
    read_at(r, 0)
}

fn read_at(r: &mut impl BufRead, depth: u8) -> io::Result<Resp> {
    let l = line(r)?;
    let rest = l.get(1..).unwrap_or("");
    match l.get(..1).unwrap_or("") {
        "+" => Ok(Resp::Simple(rest.to_string())),
        "-" => Ok(Resp::Error(rest.to_string())),
        ":" => Ok(Resp::Int(number(rest)?)),
        "$" => {
            let n = number(rest)?;
            if n < 0 {
                return Ok(Resp::Nil);
            }
            let n = n as u64;
            if n > MAX_ENVELOPE as u64 {
                let skipped = io::copy(&mut r.by_ref().take(n + 2), &mut io::sink())?;
                return if skipped == n + 2 {
                    Ok(Resp::TooBig)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf)?;
            if !buf.ends_with(b"\r\n") {
                return Err(invalid("bulk not ended by CRLF"));
            }
            buf.truncate(n as usize);
            Ok(Resp::Bulk(buf))
        }
        "*" => {
            let n = number(rest)?;
            if n < 0 {
                return Ok(Resp::Nil);
            }
            if n > MAX_ARRAY || depth > 1 {
                return Err(invalid("array too long or deep"));
            }
            (0..n)
                .map(|_| read_at(r, depth + 1))
                .collect::<io::Result<_>>()
                .map(Resp::Array)
        }
        _ => Err(invalid("unknown type")),
    }
}

/// Writes one command as a RESP array of bulk strings.
pub(crate) fn write_command(w: &mut impl Write, args: &[&[u8]]) -> io::Result<()> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    w.write_all(&out)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> io::Result<Resp> {
        read(&mut io::BufReader::new(b))
    }

    #[test]
    fn reads_a_message_push() {
        let v = parse(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n").unwrap();
        assert_eq!(
            v,
            Resp::Array(vec![
                Resp::Bulk(b"message".to_vec()),
                Resp::Bulk(b"c".to_vec()),
                Resp::Bulk(b"hi".to_vec()),
            ])
        );
        assert_eq!(parse(b"+PONG\r\n").unwrap(), Resp::Simple("PONG".into()));
        assert_eq!(parse(b":3\r\n").unwrap(), Resp::Int(3));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Resp::Nil);
    }

    #[test]
    fn refuses_garbage_without_panic() {
        for bad in [
            &b""[..],
            b"?x\r\n",
            b"$5\r\nab\r\n",
            b"*99999\r\n",
            b"$abc\r\n",
            b"*1\r\n*1\r\n*1\r\n:1\r\n",
            b"\xff\r\n",
            b"+no end",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn skips_a_bulk_past_the_limit() {
        let n = MAX_ENVELOPE + 1;
        let mut b = format!("${n}\r\n").into_bytes();
        b.resize(b.len() + n, b'x');
        b.extend_from_slice(b"\r\n:1\r\n");
        let mut r = io::BufReader::new(&b[..]);
        assert_eq!(read(&mut r).unwrap(), Resp::TooBig);
        assert_eq!(read(&mut r).unwrap(), Resp::Int(1));
    }
}
