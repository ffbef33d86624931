//! Whole SSE events out of a byte stream cut anywhere: what the relay
//! forwards and reads ([`super::splice`]) and what metering reads
//! ([`crate::openai`]'s `metered`).

use bytes::{Bytes, BytesMut};

/// The complete events now available: `chunk` itself when nothing is
/// pending and it ends on a boundary (the common case: zero copy), else
/// everything up to the last boundary of the pending bytes.
pub fn take_frames(pending: &mut BytesMut, chunk: Bytes) -> Option<Bytes> {
    if pending.is_empty() && boundary_end(&chunk) == Some(chunk.len()) {
        return Some(chunk);
    }
    pending.extend_from_slice(&chunk);
    let end = boundary_end(pending)?;
    Some(pending.split_to(end).freeze())
}

/// The end of the last blank line (`\n\n` or `\r\n\r\n`) in `buf`.
fn boundary_end(buf: &[u8]) -> Option<usize> {
    (1..buf.len()).rev().find_map(|i| {
        let blank = buf[i] == b'\n'
            && (buf[i - 1] == b'\n' || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n'));
        blank.then_some(i + 1)
    })
}

/// The `data:` payload of one event (its first data line), if any.
pub fn data_of(event: &[u8]) -> Option<&[u8]> {
    event.split(|b| *b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let data = line.strip_prefix(b"data:")?;
        Some(data.strip_prefix(b" ").unwrap_or(data))
    })
}

/// Events of `frames` (whole events), each with its blank line.
pub fn events(frames: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= frames.len() {
            return None;
        }
        let rest = &frames[start..];
        let end = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|i| i + 2)
            .or_else(|| {
                rest.windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map(|i| i + 4)
            })
            .unwrap_or(rest.len());
        let span = (start, start + end);
        start += end;
        Some(span)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_pass_whole_and_partials_wait() {
        let mut p = BytesMut::new();
        let whole = Bytes::from_static(b"data: {\"a\":1}\n\n");
        let out = take_frames(&mut p, whole.clone()).unwrap();
        assert_eq!(out.as_ptr(), whole.as_ptr(), "zero copy on the fast path");
        assert_eq!(
            take_frames(&mut p, Bytes::from_static(b"data: {\"b\"")),
            None
        );
        let out = take_frames(&mut p, Bytes::from_static(b":2}\n\ndata: [DO")).unwrap();
        assert_eq!(&out[..], b"data: {\"b\":2}\n\n");
        let out = take_frames(&mut p, Bytes::from_static(b"NE]\r\n\r\n")).unwrap();
        assert_eq!(&out[..], b"data: [DONE]\r\n\r\n");
        assert!(p.is_empty());
    }
}
