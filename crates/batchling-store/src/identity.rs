use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

/// What makes an input file the same file: its size and a 128-bit hash of
/// its content (xxh3, about 10 GB/s, so even a large file is checked in
/// a second or two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputIdentity {
    /// Size in bytes.
    pub size: u64,
    /// xxh3-128 of the content, as 32 hex digits.
    pub hash: String,
}

impl InputIdentity {
    /// Read the whole file once.
    pub fn of_file(path: &Path) -> io::Result<Self> {
        let mut f = File::open(path)?;
        let mut h = Xxh3::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        Ok(InputIdentity {
            size,
            hash: format!("{:032x}", h.digest128()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn identity_changes_with_content() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"{\"a\":1}\n").unwrap();
        let a = InputIdentity::of_file(f.path()).unwrap();
        assert_eq!(a.size, 8);
        assert_eq!(a, InputIdentity::of_file(f.path()).unwrap());
        f.write_all(b"{\"b\":2}\n").unwrap();
        let b = InputIdentity::of_file(f.path()).unwrap();
        assert_eq!(b.size, 16);
        assert_ne!(a.hash, b.hash);
    }
}
