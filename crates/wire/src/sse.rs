//! Reading `text/event-stream` bodies (`GET /v1/events` as Server-Sent Events), for the Rust
//! clients of the event stream: the client's subscription and the verifier's revocation feed.

/// The longest SSE line accepted; sessiond's events are well under 4 KiB.
pub const MAX_LINE: usize = 64 * 1024;

/// One Server-Sent Events message: its `id` and its `data` (lines joined with `\n`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseMessage {
    /// The `id:` field: the event's cursor.
    pub id: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: Option<String>,
}

/// A line longer than [`MAX_LINE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

/// Splits a `text/event-stream` body into messages as its chunks arrive (the WHATWG
/// event-stream format: `field: value` lines, a blank line ends a message, `:` lines are
/// comments such as heartbeats; `\n`, `\r\n` and `\r` all end a line).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    pending: SseMessage,
    /// The last byte seen was `\r`, so a `\n` right after it ends nothing more.
    after_cr: bool,
}

impl SseParser {
    /// Feeds `bytes`; returns the messages they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseMessage>, LineTooLong> {
        let mut messages = Vec::new();
        for &byte in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    let line = std::mem::take(&mut self.line);
                    if let Some(message) = self.end_line(&line) {
                        messages.push(message);
                    }
                }
                _ if self.line.len() >= MAX_LINE => return Err(LineTooLong),
                _ => self.line.push(byte),
            }
        }
        Ok(messages)
    }

    fn end_line(&mut self, line: &[u8]) -> Option<SseMessage> {
        if line.is_empty() {
            let message = std::mem::take(&mut self.pending);
            return (message.id.is_some() || message.data.is_some()).then_some(message);
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((&line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.pending.id = Some(value.to_owned()),
            "data" => match &mut self.pending.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.pending.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: Option<&str>, data: &str) -> SseMessage {
        SseMessage {
            id: id.map(str::to_owned),
            data: Some(data.to_owned()),
        }
    }

    #[test]
    fn messages_are_split_across_chunks_and_heartbeats_are_skipped() {
        let mut parser = SseParser::default();
        assert_eq!(
            parser.push(b"retry: 1000\n: heartbeat\n\nid: 1.2\nda"),
            Ok(vec![])
        );
        assert_eq!(
            parser.push(b"ta: {\"type\":\"session.refreshed\"}\n\ndata:{}\n\n"),
            Ok(vec![
                message(Some("1.2"), "{\"type\":\"session.refreshed\"}"),
                message(None, "{}"),
            ])
        );
    }

    #[test]
    fn every_line_ending_works_and_data_lines_are_joined() {
        let mut parser = SseParser::default();
        assert_eq!(
            parser.push(b"data: a\r\ndata: b\r\n\r\ndata: c\r\rid: 9\n\n"),
            Ok(vec![
                message(None, "a\nb"),
                message(None, "c"),
                SseMessage {
                    id: Some("9".into()),
                    data: None
                },
            ])
        );
    }

    #[test]
    fn a_line_without_end_is_refused_past_the_limit() {
        let mut parser = SseParser::default();
        assert_eq!(parser.push(&vec![b'x'; MAX_LINE + 1]), Err(LineTooLong));
    }

    #[test]
    fn a_crlf_message_split_inside_a_field_name_is_reassembled() {
        let mut parser = SseParser::default();
        assert_eq!(
            parser.push(b"retry: 1000\n: ping\n\nid: 0.7\nda"),
            Ok(vec![])
        );
        assert_eq!(
            parser.push(b"ta: {}\r\n\r\n"),
            Ok(vec![message(Some("0.7"), "{}")])
        );
    }
}
