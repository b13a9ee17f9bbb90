//! The experiment's batch encoding, shared by the guest and the benchmark's
//! host side: a little-endian `u32` record count, then each record as its
//! stream and key (`u32` length, UTF-8), op (`u8`: 0 upsert, 1 delete),
//! source timestamp (`u8` flag, `i64`) and data (`u32` length, UTF-8 JSON).

/// One record read from a buffer, borrowing its text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The key.
    pub key: &'a str,
    /// A delete rather than an upsert.
    pub delete: bool,
    /// The source timestamp.
    pub source_timestamp: Option<i64>,
    /// The data, JSON text.
    pub data: &'a str,
}

/// Reads records out of a buffer in order.
pub struct Reader<'a> {
    rest: &'a [u8],
    left: u32,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, or why it is not a batch.
    pub fn new(buf: &'a [u8]) -> Result<Reader<'a>, String> {
        let mut reader = Reader { rest: buf, left: 0 };
        reader.left = reader.u32()?;
        Ok(reader)
    }

    /// How many records are left to read.
    pub fn remaining(&self) -> u32 {
        self.left
    }

    /// The next record, `None` after the last.
    pub fn next_record(&mut self) -> Result<Option<View<'a>>, String> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let stream = self.text()?;
        let key = self.text()?;
        let head = self.take(10)?;
        let data = self.text()?;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&head[2..]);
        Ok(Some(View {
            stream,
            key,
            delete: head[0] == 1,
            source_timestamp: (head[1] == 1).then_some(i64::from_le_bytes(ts)),
            data,
        }))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err(format!(
                "batch cut short: {n} bytes wanted, {} left",
                self.rest.len()
            ));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut n = [0u8; 4];
        n.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(n))
    }

    fn text(&mut self) -> Result<&'a str, String> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|e| format!("text is not UTF-8: {e}"))
    }
}

/// Encodes records into one buffer.
pub struct Writer {
    buf: Vec<u8>,
    count: u32,
}

impl Writer {
    /// A writer with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Writer {
        let mut buf = Vec::with_capacity(bytes + 4);
        buf.extend_from_slice(&0u32.to_le_bytes());
        Writer { buf, count: 0 }
    }

    /// Appends a record whose data `write_data` writes straight into the
    /// buffer; if that fails, nothing of the record stays.
    pub fn push_with<E>(
        &mut self,
        stream: &str,
        key: &str,
        delete: bool,
        source_timestamp: Option<i64>,
        write_data: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.buf.len();
        self.text(stream);
        self.text(key);
        self.buf.push(u8::from(delete));
        self.buf.push(u8::from(source_timestamp.is_some()));
        self.buf
            .extend_from_slice(&source_timestamp.unwrap_or(0).to_le_bytes());
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        if let Err(e) = write_data(&mut self.buf) {
            self.buf.truncate(start);
            return Err(e);
        }
        let len = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
        Ok(())
    }

    /// Appends a record.
    pub fn push(&mut self, record: View<'_>) {
        let Ok(()) = self.push_with(
            record.stream,
            record.key,
            record.delete,
            record.source_timestamp,
            |buf| {
                buf.extend_from_slice(record.data.as_bytes());
                Ok::<(), std::convert::Infallible>(())
            },
        );
    }

    /// The finished buffer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }

    fn text(&mut self, text: &str) {
        self.buf
            .extend_from_slice(&(text.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(text.as_bytes());
    }
}
