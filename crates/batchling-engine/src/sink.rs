//! Writing output and error files, in input order or completion order, with
//! bounded memory.
//!
//! In input order a finished line waits for every earlier one. Waiting lines
//! stay in memory up to a cap; past it they are spilled to an anonymous temp
//! file and only their offsets stay in memory (16 bytes a line), so one
//! request stuck in retries cannot make memory grow with the file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Which file a line goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    Output,
    Errors,
}

/// A finished request's line.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) seq: u64,
    pub(crate) dest: Dest,
    pub(crate) line: Vec<u8>,
}

/// Output line order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// The order of the input file (the default).
    #[default]
    Input,
    /// As requests finish: nothing waits.
    Completion,
}

enum Slot {
    Mem(Dest, Vec<u8>),
    Spilled(Dest, u64, u32),
}

pub(crate) struct Sink {
    out: BufWriter<File>,
    err: BufWriter<File>,
    paths: [PathBuf; 2],
    order: Order,
    next: u64,
    waiting: BTreeMap<u64, Slot>,
    mem_bytes: usize,
    mem_cap: usize,
    spill: Option<File>,
    spill_len: u64,
}

/// Default memory for lines waiting on an earlier one.
pub(crate) const DEFAULT_MEM_CAP: usize = 32 << 20;

fn create(path: &Path) -> io::Result<BufWriter<File>> {
    Ok(BufWriter::with_capacity(256 << 10, File::create(path)?))
}

impl Sink {
    /// Create (truncate) both files. Both always exist after a run, so a
    /// stale error file from an earlier run never misleads.
    pub(crate) fn create(
        output: &Path,
        errors: &Path,
        order: Order,
        mem_cap: usize,
    ) -> Result<Self, (PathBuf, io::Error)> {
        let out = create(output).map_err(|e| (output.to_owned(), e))?;
        let err = create(errors).map_err(|e| (errors.to_owned(), e))?;
        Ok(Sink {
            out,
            err,
            paths: [output.to_owned(), errors.to_owned()],
            order,
            next: 0,
            waiting: BTreeMap::new(),
            mem_bytes: 0,
            mem_cap,
            spill: None,
            spill_len: 0,
        })
    }

    fn write(&mut self, dest: Dest, line: &[u8]) -> Result<(), (PathBuf, io::Error)> {
        let (w, p) = match dest {
            Dest::Output => (&mut self.out, &self.paths[0]),
            Dest::Errors => (&mut self.err, &self.paths[1]),
        };
        w.write_all(line).map_err(|e| (p.clone(), e))
    }

    fn write_slot(&mut self, slot: Slot) -> Result<(), (PathBuf, io::Error)> {
        match slot {
            Slot::Mem(dest, line) => {
                self.mem_bytes -= line.len();
                self.write(dest, &line)
            }
            Slot::Spilled(dest, offset, len) => {
                let spill = self
                    .spill
                    .as_mut()
                    .expect("spilled lines have a spill file");
                let mut buf = vec![0; len as usize];
                let read = spill
                    .seek(SeekFrom::Start(offset))
                    .and_then(|_| io::Read::read_exact(spill, &mut buf));
                read.map_err(|e| (PathBuf::from("<spill file>"), e))?;
                self.write(dest, &buf)
            }
        }
    }

    pub(crate) fn put(&mut self, f: Finished) -> Result<(), (PathBuf, io::Error)> {
        if self.order == Order::Completion {
            return self.write(f.dest, &f.line);
        }
        if f.seq != self.next {
            self.mem_bytes += f.line.len();
            self.waiting.insert(f.seq, Slot::Mem(f.dest, f.line));
            if self.mem_bytes > self.mem_cap {
                self.spill_all()
                    .map_err(|e| (PathBuf::from("<spill file>"), e))?;
            }
            return Ok(());
        }
        self.write(f.dest, &f.line)?;
        self.next += 1;
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            let slot = entry.remove();
            self.write_slot(slot)?;
            self.next += 1;
        }
        Ok(())
    }

    fn spill_all(&mut self) -> io::Result<()> {
        if self.spill.is_none() {
            self.spill = Some(tempfile_in_tmp()?);
        }
        let spill = self.spill.as_mut().expect("just set");
        spill.seek(SeekFrom::Start(self.spill_len))?;
        let mut w = BufWriter::new(spill);
        for slot in self.waiting.values_mut() {
            if let Slot::Mem(dest, line) = slot {
                w.write_all(line)?;
                let spilled = Slot::Spilled(*dest, self.spill_len, line.len() as u32);
                self.spill_len += line.len() as u64;
                *slot = spilled;
            }
        }
        w.flush()?;
        self.mem_bytes = 0;
        Ok(())
    }

    /// Write whatever still waits (requests before it never finished: a
    /// stopped run), then flush both files to disk.
    pub(crate) fn finish(mut self) -> Result<(), (PathBuf, io::Error)> {
        while let Some((_, slot)) = self.waiting.pop_first() {
            self.write_slot(slot)?;
        }
        for (w, p) in [
            (&mut self.out, &self.paths[0]),
            (&mut self.err, &self.paths[1]),
        ] {
            w.flush().map_err(|e| (p.clone(), e))?;
            w.get_ref().sync_all().map_err(|e| (p.clone(), e))?;
        }
        Ok(())
    }
}

/// An unnamed temporary file (removed by the OS when closed).
fn tempfile_in_tmp() -> io::Result<File> {
    let dir = std::env::temp_dir();
    let name = format!(
        "batchling-spill-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    );
    let path = dir.join(name);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    // Unlink at once: the open handle keeps the data; nothing is left behind.
    std::fs::remove_file(&path)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, dest: Dest) -> Finished {
        Finished {
            seq,
            dest,
            line: format!("{seq}\n").into_bytes(),
        }
    }

    fn run(order: Order, cap: usize, seqs: &[u64]) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let (o, e) = (dir.path().join("o"), dir.path().join("e"));
        let mut s = Sink::create(&o, &e, order, cap).unwrap();
        for &q in seqs {
            let dest = if q % 3 == 0 {
                Dest::Errors
            } else {
                Dest::Output
            };
            s.put(line(q, dest)).unwrap();
        }
        s.finish().unwrap();
        (
            std::fs::read_to_string(o).unwrap(),
            std::fs::read_to_string(e).unwrap(),
        )
    }

    #[test]
    fn input_order_restored_with_and_without_spill() {
        let seqs = [5, 1, 0, 2, 4, 3, 8, 7, 6, 9];
        for cap in [0, 4, 1 << 20] {
            let (o, e) = run(Order::Input, cap, &seqs);
            assert_eq!(o, "1\n2\n4\n5\n7\n8\n", "cap {cap}");
            assert_eq!(e, "0\n3\n6\n9\n", "cap {cap}");
        }
    }

    #[test]
    fn completion_order_writes_at_once() {
        let (o, _) = run(Order::Completion, 0, &[5, 1, 2]);
        assert_eq!(o, "5\n1\n2\n");
    }

    #[test]
    fn gaps_are_flushed_at_the_end() {
        let (o, _) = run(Order::Input, 1 << 20, &[2, 4]);
        assert_eq!(o, "2\n4\n");
    }
}
