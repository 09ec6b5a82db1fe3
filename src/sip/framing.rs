//! Cuts SIP messages out of a byte stream (TCP) by Content-Length (RFC 3261 §18.3):
//! several messages in one segment and one message split over many are both handled.

/// The stream cannot be framed any more; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// Headers grew beyond the limit without an empty line.
    #[error("message headers exceed {0} bytes")]
    TooLarge(usize),
    /// Content-Length is not a number.
    #[error("bad Content-Length in a stream")]
    BadContentLength,
}

/// Accumulates stream bytes and yields whole messages.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    max: usize,
}

impl StreamFramer {
    /// A framer accepting messages up to `max` bytes.
    pub fn new(max: usize) -> Self {
        StreamFramer {
            buf: Vec::with_capacity(4096),
            max,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, if the buffer holds one.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        // CRLF keep-alives (RFC 5626 §3.5.1) and stray line ends between messages.
        let skip = self
            .buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        if skip > 0 {
            self.buf.drain(..skip);
        }
        let Some(head_end) = find(&self.buf, b"\r\n\r\n").map(|i| i + 4) else {
            if self.buf.len() > self.max {
                return Err(FramingError::TooLarge(self.max));
            }
            return Ok(None);
        };
        let body_len = content_length(&self.buf[..head_end])?.unwrap_or(0);
        // A Content-Length near usize::MAX must not wrap round to a small total.
        let total = head_end
            .checked_add(body_len)
            .filter(|&t| t <= self.max)
            .ok_or(FramingError::TooLarge(self.max))?;
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        Ok(Some(std::mem::replace(&mut self.buf, rest)))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads Content-Length (or compact `l`) from a header block, unfolded lines included.
fn content_length(head: &[u8]) -> Result<Option<usize>, FramingError> {
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]);
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let value = String::from_utf8_lossy(&line[colon + 1..]);
            return value
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| FramingError::BadContentLength);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(body: &str, compact: bool) -> Vec<u8> {
        let cl = if compact { "l" } else { "Content-Length" };
        format!(
            "OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n{cl}: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn a_content_length_that_would_wrap_is_too_large() {
        let mut f = StreamFramer::new(65535);
        f.push(
            format!(
                "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: {}\r\n\r\nbody",
                usize::MAX - 2
            )
            .as_bytes(),
        );
        assert_eq!(f.next_message(), Err(FramingError::TooLarge(65535)));
    }

    #[test]
    fn two_messages_in_one_segment() {
        let mut f = StreamFramer::new(65535);
        let (a, b) = (msg("hello", false), msg("", true));
        f.push(&[a.clone(), b.clone()].concat());
        assert_eq!(f.next_message().unwrap(), Some(a));
        assert_eq!(f.next_message().unwrap(), Some(b));
        assert_eq!(f.next_message().unwrap(), None);
    }

    #[test]
    fn keep_alives_are_skipped() {
        let mut f = StreamFramer::new(65535);
        let a = msg("x", false);
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_message().unwrap(), None);
        f.push(&a);
        assert_eq!(f.next_message().unwrap(), Some(a));
    }

    #[test]
    fn oversized_headers_are_an_error() {
        let mut f = StreamFramer::new(100);
        f.push(&[b'a'; 200]);
        assert_eq!(f.next_message(), Err(FramingError::TooLarge(100)));
    }

    proptest! {
        /// However the stream is cut, the same messages come out in order.
        #[test]
        fn any_split_yields_the_same_messages(
            bodies in proptest::collection::vec("[a-z]{0,40}", 1..5),
            cuts in proptest::collection::vec(1usize..50, 1..20),
        ) {
            let msgs: Vec<Vec<u8>> = bodies.iter().enumerate().map(|(i, b)| msg(b, i % 2 == 0)).collect();
            let stream = msgs.concat();
            let mut f = StreamFramer::new(65535);
            let mut out = Vec::new();
            let mut pos = 0;
            let mut ci = 0;
            while pos < stream.len() {
                let n = cuts[ci % cuts.len()].min(stream.len() - pos);
                ci += 1;
                f.push(&stream[pos..pos + n]);
                pos += n;
                while let Some(m) = f.next_message().unwrap() {
                    out.push(m);
                }
            }
            prop_assert_eq!(out, msgs);
        }
    }
}
