//! Bytes appended to a file in 4 MB chunks, written past the page cache (O_DIRECT) where the
//! file system allows it: copying gigabytes into the page cache, and filling it, cost more
//! than the disk writes themselves (a 10 GB SVF of a city: 19 s of CPU in the copy).

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Bytes gathered before a write: a multiple of any disk block, the unit of direct writes.
const CHUNK: usize = 4 << 20;
/// The alignment of a direct read's or write's buffer, file offset and length.
pub const DIRECT_ALIGN: usize = 4096;
const ALIGN: usize = DIRECT_ALIGN;

/// Grows `buf` (never shrinks it) to hold `len` bytes at an address aligned for direct I/O,
/// and says where they start: `buf[at..at + len]`.
pub fn aligned(buf: &mut Vec<u8>, len: usize) -> usize {
    if buf.len() < len + ALIGN {
        buf.resize(len + ALIGN, 0);
    }
    buf.as_ptr().align_offset(ALIGN).min(ALIGN)
}

/// Appends to a file from an offset on: whole chunks directly when asked and allowed, the rest
/// (and everything, where the file system refuses direct writes) through the page cache.
#[derive(Debug)]
pub struct Appender {
    file: File,
    /// The same file opened for direct writes.
    direct: Option<File>,
    /// The bytes after `flushed`, at `buf[at..at + filled]` (`at` aligns them to 4 KB).
    buf: Vec<u8>,
    at: usize,
    filled: usize,
    flushed: u64,
}

impl Appender {
    /// Appends to `file` (open for reading and writing, at `path`) from byte `start`, directly
    /// if `direct`. The bytes of `start`'s disk block before it are read back, so that whole
    /// blocks are written.
    pub fn new(file: File, path: &Path, start: u64, direct: bool) -> std::io::Result<Appender> {
        let direct = match direct {
            true => std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok(),
            false => None,
        };
        let mut buf = Vec::new();
        let at = aligned(&mut buf, CHUNK);
        let flushed = start - start % ALIGN as u64;
        let filled = (start - flushed) as usize;
        let mut a = Appender {
            file,
            direct,
            buf,
            at,
            filled,
            flushed,
        };
        if filled > 0 {
            let head = &mut a.buf[at..at + filled];
            a.file.read_exact_at(head, flushed)?;
        }
        Ok(a)
    }

    /// Where the next byte goes.
    pub fn position(&self) -> u64 {
        self.flushed + self.filled as u64
    }

    /// Appends `bytes`.
    pub fn put(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let n = (CHUNK - self.filled).min(bytes.len());
            let from = self.at + self.filled;
            self.buf[from..from + n].copy_from_slice(&bytes[..n]);
            (self.filled, bytes) = (self.filled + n, &bytes[n..]);
            if self.filled == CHUNK {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes what is gathered; the file, for what is then written in place.
    pub fn finish(&mut self) -> std::io::Result<&File> {
        self.flush()?;
        Ok(&self.file)
    }

    /// Writes the bytes gathered: a whole chunk directly when the file is written so, anything
    /// else (and everything where the file system refuses direct writes) through the page cache.
    fn flush(&mut self) -> std::io::Result<()> {
        let bytes = &self.buf[self.at..self.at + self.filled];
        let mut direct = self.filled == CHUNK && self.direct.is_some();
        if let Some(d) = self.direct.as_ref().filter(|_| direct) {
            match d.write_all_at(bytes, self.flushed) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct = None;
                    direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        if !direct {
            self.file.write_all_at(bytes, self.flushed)?;
        }
        self.flushed += self.filled as u64;
        self.filled = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_from_an_unaligned_end_directly_and_keeps_what_was_before() {
        let dir = std::env::temp_dir().join(format!("tessera-append-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.bin");
        let head: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &head).unwrap();
        let body: Vec<u8> = (0..9_000_001u32).map(|i| (i % 241) as u8 ^ 0x5a).collect();
        for direct in [true, false] {
            let file = File::options().read(true).write(true).open(&path).unwrap();
            let mut a = Appender::new(file, &path, head.len() as u64, direct).unwrap();
            // Pieces of uneven sizes, across chunk boundaries.
            for piece in body.chunks(1_234_567) {
                a.put(piece).unwrap();
            }
            assert_eq!(a.position(), (head.len() + body.len()) as u64);
            a.finish().unwrap().write_all_at(b"patch", 100).unwrap();
            drop(a);
            let got = std::fs::read(&path).unwrap();
            assert_eq!(got.len(), head.len() + body.len());
            assert_eq!(&got[..100], &head[..100]);
            assert_eq!(&got[100..105], b"patch");
            assert_eq!(&got[105..head.len()], &head[105..]);
            assert!(got[head.len()..] == body[..], "direct: {direct}");
            std::fs::write(&path, &head).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
