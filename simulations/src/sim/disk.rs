//! A crash-consistent disk in memory for the simulated nodes' redb files.
//!
//! Reads see every write; only what was written before the last `sync_data` survives a
//! crash (plus, when the crash tears a write, a prefix of the writes after it). A disk
//! can be armed to die after a number of writes: the commit in flight then fails, as at a
//! power cut in the middle of it.

use std::sync::{Arc, Mutex};

use redb::StorageBackend;

type BackendIoError = std::io::Error;

#[derive(Debug, Default)]
struct State {
    /// What a crash would leave.
    durable: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
    /// Writes since the last sync: (offset, bytes), and length changes as (len, empty).
    pending: Vec<Pending>,
    dead: bool,
    /// Die after this many more writes.
    die_after: Option<u32>,
}

#[derive(Debug, Clone)]
enum Pending {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

fn apply(buf: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::Write(offset, data) => {
            let end = *offset as usize + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[*offset as usize..end].copy_from_slice(data);
        }
        Pending::SetLen(len) => buf.resize(*len as usize, 0),
    }
}

/// One node's disk. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    state: Arc<Mutex<State>>,
}

fn gone() -> BackendIoError {
    std::io::Error::other("simulated power cut")
}

impl Disk {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `writes` writes succeed, then the disk dies.
    pub fn die_after(&self, writes: u32) {
        self.lock().die_after = Some(writes);
    }

    /// Power cut: this disk accepts nothing more; the returned disk holds what survived
    /// (the synced state, and the first `torn` writes after it).
    pub fn crash(&self, torn: usize) -> Disk {
        let mut s = self.lock();
        s.dead = true;
        let mut survived = s.durable.clone();
        for p in s.pending.iter().take(torn) {
            apply(&mut survived, p);
        }
        Disk {
            state: Arc::new(Mutex::new(State {
                durable: survived.clone(),
                current: survived,
                pending: Vec::new(),
                dead: false,
                die_after: None,
            })),
        }
    }

    /// Writes since the last sync (how many a crash could tear).
    pub fn unsynced(&self) -> usize {
        self.lock().pending.len()
    }

    fn step(&self, s: &mut State) -> Result<(), BackendIoError> {
        if s.dead {
            return Err(gone());
        }
        if let Some(n) = s.die_after.as_mut() {
            if *n == 0 {
                s.dead = true;
                return Err(gone());
            }
            *n -= 1;
        }
        Ok(())
    }
}

impl StorageBackend for Disk {
    fn len(&self) -> Result<u64, BackendIoError> {
        Ok(self.lock().current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        let s = self.lock();
        let end = offset as usize + out.len();
        let data = s
            .current
            .get(offset as usize..end)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(data);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        let mut s = self.lock();
        self.step(&mut s)?;
        let p = Pending::SetLen(len);
        apply(&mut s.current, &p);
        s.pending.push(p);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        let mut s = self.lock();
        self.step(&mut s)?;
        let pending = std::mem::take(&mut s.pending);
        for p in &pending {
            apply(&mut s.durable, p);
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        let mut s = self.lock();
        self.step(&mut s)?;
        let p = Pending::Write(offset, data.to_vec());
        apply(&mut s.current, &p);
        s.pending.push(p);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_synced_writes_survive_a_crash() {
        let d = Disk::default();
        d.write(0, b"abcd").unwrap();
        d.sync_data().unwrap();
        d.write(2, b"XY").unwrap();
        let mut out = [0u8; 4];
        d.read(0, &mut out).unwrap();
        assert_eq!(&out, b"abXY");
        let after = d.crash(0);
        after.read(0, &mut out).unwrap();
        assert_eq!(&out, b"abcd");
        assert!(d.write(0, b"z").is_err(), "a crashed disk takes nothing");
        let torn = Disk::default();
        torn.write(0, b"abcd").unwrap();
        torn.sync_data().unwrap();
        torn.write(0, b"1").unwrap();
        torn.write(1, b"2").unwrap();
        torn.crash(1).read(0, &mut out).unwrap();
        assert_eq!(&out, b"1bcd");
        let dying = Disk::default();
        dying.die_after(1);
        dying.write(0, b"a").unwrap();
        assert!(dying.write(1, b"b").is_err());
    }
}
