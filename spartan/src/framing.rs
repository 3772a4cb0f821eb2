//! DNS over TCP framing (RFC 1035 4.2.2: a two-byte length, then the
//! message), in one place for the server, the forwarder and the self-check.
//!
//! [`FrameReader`] is cancel-safe: bytes read are kept in its buffer, so a
//! read that a timeout interrupts loses nothing (a `read_u16` cut between
//! its two bytes would lose the first).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// `message` with its length prefix.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&(message.len() as u16).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Writes one framed message.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, message: &[u8]) -> io::Result<()> {
    writer.write_all(&frame(message)).await
}

/// Reads length-prefixed messages from a stream.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next complete message already buffered, if any.
    pub fn next_buffered(&mut self) -> Option<Vec<u8>> {
        if self.buf.len() < 2 {
            return None;
        }
        let len = u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize;
        if self.buf.len() < 2 + len {
            return None;
        }
        let message = self.buf[2..2 + len].to_vec();
        self.buf.drain(..2 + len);
        Some(message)
    }

    /// Reads more bytes into the buffer: `Ok(0)` at end of stream.
    /// Cancel-safe: a cancelled call has read nothing or kept what it read.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> io::Result<usize> {
        self.buf.reserve(4096);
        reader.read_buf(&mut self.buf).await
    }

    /// Reads until one whole message is there. `Ok(None)` at a clean end of
    /// stream; an end in the middle of a message is an error.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(m) = self.next_buffered() {
                return Ok(Some(m));
            }
            if self.fill(reader).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_split_anywhere_are_reassembled() {
        let mut stream = Vec::new();
        stream.extend(frame(b"first"));
        stream.extend(frame(b""));
        stream.extend(frame(&[7u8; 300]));
        // Delivered one byte at a time.
        let (mut client, mut server) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move { client.write_all(&stream).await });
        let mut reader = FrameReader::new();
        assert_eq!(reader.read(&mut server).await.unwrap().unwrap(), b"first");
        assert_eq!(reader.read(&mut server).await.unwrap().unwrap(), b"");
        assert_eq!(
            reader.read(&mut server).await.unwrap().unwrap(),
            vec![7u8; 300]
        );
        writer.await.unwrap().unwrap();
        assert!(reader.read(&mut server).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_cancelled_read_loses_no_byte() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut reader = FrameReader::new();
        // Only the first length byte arrives; the read times out.
        client.write_all(&[0]).await.unwrap();
        let cut = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            reader.read(&mut server),
        )
        .await;
        assert!(cut.is_err());
        client.write_all(&[3, b'a', b'b', b'c']).await.unwrap();
        assert_eq!(reader.read(&mut server).await.unwrap().unwrap(), b"abc");
    }
}
