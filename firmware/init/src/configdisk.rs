//! The config partition: a small raw block device that keeps the box's
//! settings across reboots, with no filesystem (and so no mkfs and no fsck).
//!
//! ```text
//! slot 0 at byte 0, slot 1 at byte SLOT_SIZE; each slot:
//!   0..8    magic "MFCONF01"
//!   8..16   generation, u64 little-endian (higher = newer)
//!   16..20  payload length, u32 little-endian
//!   20..24  CRC-32 (IEEE 802.3) of bytes 8..20 and the payload
//!   24..    payload: the settings as UTF-8 TOML
//! ```
//!
//! A save writes the slot that does *not* hold the newest valid copy, with
//! the next generation, and flushes the device before returning. A crash
//! in the middle of a save leaves that slot torn (its CRC fails) and the
//! other slot intact, so the settings of the last finished save always
//! survive.
//!
//! A device is only written when it is blank (all zeros where the slots
//! go) or already carries our magic, so a misconfigured device name never
//! overwrites somebody's filesystem.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"MFCONF01";
/// Bytes per slot; the settings are a few hundred bytes.
pub const SLOT_SIZE: u64 = 64 * 1024;
const HEADER: usize = 24;
/// The largest payload a slot holds.
pub const MAX_PAYLOAD: usize = SLOT_SIZE as usize - HEADER;
/// Writes are padded to whole 4 KiB blocks, the unit disks write at once.
const BLOCK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ConfigDiskError {
    #[error("config device {0}: {1}")]
    Io(PathBuf, io::Error),
    #[error("config device {0} holds other data (neither blank nor a mailfort config); not touching it")]
    Foreign(PathBuf),
    #[error("config device {0} is too small: {1} bytes, at least {2} needed")]
    TooSmall(PathBuf, u64, u64),
    #[error("the settings are {0} bytes, more than a slot holds ({MAX_PAYLOAD})")]
    TooLarge(usize),
}

/// What one slot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// All zeros: never written.
    Blank,
    /// A complete, checked copy.
    Valid { generation: u64, payload: Vec<u8> },
    /// Our magic with a bad checksum or length: a torn write.
    Torn,
    /// Something else.
    Foreign,
}

/// Decodes a slot's bytes.
pub fn decode_slot(b: &[u8]) -> Slot {
    if b.iter().all(|&x| x == 0) {
        return Slot::Blank;
    }
    if b.len() < HEADER || &b[..8] != MAGIC {
        return Slot::Foreign;
    }
    let generation = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
    let len = u32::from_le_bytes(b[16..20].try_into().unwrap_or_default()) as usize;
    let crc = u32::from_le_bytes(b[20..24].try_into().unwrap_or_default());
    if len > MAX_PAYLOAD || HEADER + len > b.len() {
        return Slot::Torn;
    }
    let mut c = Crc32::new();
    c.update(&b[8..20]);
    c.update(&b[HEADER..HEADER + len]);
    if c.finish() != crc {
        return Slot::Torn;
    }
    Slot::Valid { generation, payload: b[HEADER..HEADER + len].to_vec() }
}

/// Encodes a slot, padded to whole blocks.
pub fn encode_slot(generation: u64, payload: &[u8]) -> Result<Vec<u8>, ConfigDiskError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(ConfigDiskError::TooLarge(payload.len()));
    }
    let total = (HEADER + payload.len()).div_ceil(BLOCK) * BLOCK;
    let mut b = vec![0u8; total];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&generation.to_le_bytes());
    b[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    b[HEADER..HEADER + payload.len()].copy_from_slice(payload);
    let mut c = Crc32::new();
    c.update(&b[8..20]);
    c.update(payload);
    b[20..24].copy_from_slice(&c.finish().to_le_bytes());
    Ok(b)
}

/// An open config device (or, in tests, a file).
pub struct ConfigDisk {
    path: PathBuf,
    file: File,
}

impl ConfigDisk {
    /// Opens the device and checks it is blank or ours.
    pub fn open(path: &Path) -> Result<ConfigDisk, ConfigDiskError> {
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| ConfigDiskError::Io(path.to_path_buf(), e))?;
        let d = ConfigDisk { path: path.to_path_buf(), file };
        let size = d.size()?;
        if size < 2 * SLOT_SIZE {
            return Err(ConfigDiskError::TooSmall(d.path.clone(), size, 2 * SLOT_SIZE));
        }
        let slots = d.slots()?;
        let ours = slots.iter().any(|s| matches!(s, Slot::Valid { .. } | Slot::Torn));
        let blank = slots.iter().all(|s| matches!(s, Slot::Blank));
        if !ours && !blank {
            return Err(ConfigDiskError::Foreign(d.path.clone()));
        }
        Ok(d)
    }

    fn io(&self) -> impl FnOnce(io::Error) -> ConfigDiskError + '_ {
        move |e| ConfigDiskError::Io(self.path.clone(), e)
    }

    fn size(&self) -> Result<u64, ConfigDiskError> {
        use std::io::{Seek, SeekFrom};
        // A block device's metadata says 0 bytes; seeking to its end
        // gives its size.
        let mut f = &self.file;
        let end = f.seek(SeekFrom::End(0)).map_err(self.io())?;
        Ok(end)
    }

    fn slots(&self) -> Result<[Slot; 2], ConfigDiskError> {
        let mut out = [Slot::Blank, Slot::Blank];
        for (i, s) in out.iter_mut().enumerate() {
            let mut buf = vec![0u8; SLOT_SIZE as usize];
            self.file.read_exact_at(&mut buf, i as u64 * SLOT_SIZE).map_err(self.io())?;
            *s = decode_slot(&buf);
        }
        Ok(out)
    }

    /// The newest complete copy: (slot index, generation, payload).
    fn newest(&self) -> Result<Option<(usize, u64, Vec<u8>)>, ConfigDiskError> {
        let mut best: Option<(usize, u64, Vec<u8>)> = None;
        for (i, s) in self.slots()?.into_iter().enumerate() {
            if let Slot::Valid { generation, payload } = s {
                let newer = match &best {
                    Some((_, g, _)) => generation > *g,
                    None => true,
                };
                if newer {
                    best = Some((i, generation, payload));
                }
            }
        }
        Ok(best)
    }

    /// The payload of the last finished save, if any.
    pub fn load(&self) -> Result<Option<Vec<u8>>, ConfigDiskError> {
        Ok(self.newest()?.map(|(_, _, p)| p))
    }

    /// Saves `payload` durably into the other slot.
    pub fn save(&self, payload: &[u8]) -> Result<(), ConfigDiskError> {
        let (slot, generation) = match self.newest()? {
            Some((i, g, _)) => (1 - i, g + 1),
            None => (0, 1),
        };
        let bytes = encode_slot(generation, payload)?;
        self.file.write_all_at(&bytes, slot as u64 * SLOT_SIZE).map_err(self.io())?;
        // fsync on a block device flushes the disk's write cache too.
        self.file.sync_all().map_err(self.io())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// CRC-32 as in IEEE 802.3 (reflected, polynomial 0xEDB88320), the one
/// zlib and gzip use.
pub struct Crc32(u32);

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

impl Crc32 {
    pub fn new() -> Crc32 {
        Crc32(0xFFFF_FFFF)
    }
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = CRC_TABLE[((self.0 ^ b as u32) & 0xFF) as usize] ^ (self.0 >> 8);
        }
    }
    pub fn finish(&self) -> u32 {
        !self.0
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Crc32::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank_disk(dir: &Path) -> PathBuf {
        let p = dir.join("config.img");
        let f = File::create(&p).unwrap();
        f.set_len(1024 * 1024).unwrap();
        p
    }

    #[test]
    fn crc_check_value() {
        let mut c = Crc32::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xCBF4_3926);
    }

    #[test]
    fn round_trip_and_alternation() {
        let dir = tempfile::tempdir().unwrap();
        let p = blank_disk(dir.path());
        let d = ConfigDisk::open(&p).unwrap();
        assert_eq!(d.load().unwrap(), None);
        d.save(b"one").unwrap();
        assert_eq!(d.load().unwrap().as_deref(), Some(&b"one"[..]));
        d.save(b"two").unwrap();
        d.save(b"three").unwrap();
        let d = ConfigDisk::open(&p).unwrap();
        assert_eq!(d.load().unwrap().as_deref(), Some(&b"three"[..]));
        // The two slots hold the last two saves.
        let slots = d.slots().unwrap();
        let gens: Vec<u64> = slots.iter().filter_map(|s| if let Slot::Valid { generation, .. } = s { Some(*generation) } else { None }).collect();
        assert_eq!(gens.len(), 2);
        assert!(gens.contains(&3) && gens.contains(&2));
    }

    #[test]
    fn a_torn_save_keeps_the_previous_settings() {
        let dir = tempfile::tempdir().unwrap();
        let p = blank_disk(dir.path());
        let d = ConfigDisk::open(&p).unwrap();
        d.save(b"good settings").unwrap();
        let payload = vec![b'x'; 6000];
        let full = encode_slot(2, &payload).unwrap();
        // A crash after every possible prefix of the next save (at 512
        // byte sector granularity): the good settings always survive.
        for cut in (0..=full.len()).step_by(512) {
            let f = OpenOptions::new().write(true).open(&p).unwrap();
            f.write_all_at(&vec![0u8; SLOT_SIZE as usize], SLOT_SIZE).unwrap();
            f.write_all_at(&full[..cut], SLOT_SIZE).unwrap();
            let d = ConfigDisk::open(&p).unwrap();
            let got = d.load().unwrap().unwrap();
            // Once header and payload are down (the padding may be cut),
            // the new settings count; before, the old ones.
            if cut >= HEADER + payload.len() {
                assert!(got == payload, "cut at {cut}: new settings expected");
            } else {
                assert!(got == b"good settings", "cut at {cut}: old settings expected");
            }
        }
        // A flipped bit in the newest copy falls back to the older one.
        let d = ConfigDisk::open(&p).unwrap();
        d.save(b"newest").unwrap();
        let slot = if let Some((i, _, _)) = d.newest().unwrap() { i } else { unreachable!() };
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, slot as u64 * SLOT_SIZE + HEADER as u64 + 2).unwrap();
        f.write_all_at(&[b[0] ^ 1], slot as u64 * SLOT_SIZE + HEADER as u64 + 2).unwrap();
        assert_ne!(ConfigDisk::open(&p).unwrap().load().unwrap().as_deref(), Some(&b"newest"[..]));
        // The next save goes over the damaged slot, not the good one.
        let d = ConfigDisk::open(&p).unwrap();
        let before = d.load().unwrap();
        d.save(b"after damage").unwrap();
        assert_eq!(d.load().unwrap().as_deref(), Some(&b"after damage"[..]));
        assert!(before.is_some());
    }

    #[test]
    fn foreign_and_small_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = blank_disk(dir.path());
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        // A btrfs superblock lives at 64 KiB: exactly where slot 1 is.
        f.write_all_at(b"_BHRfS_M", SLOT_SIZE + 0x40).unwrap();
        assert!(matches!(ConfigDisk::open(&p), Err(ConfigDiskError::Foreign(_))));
        let small = dir.path().join("small.img");
        File::create(&small).unwrap().set_len(4096).unwrap();
        assert!(matches!(ConfigDisk::open(&small), Err(ConfigDiskError::TooSmall(..))));
        assert!(matches!(encode_slot(1, &vec![0; MAX_PAYLOAD + 1]), Err(ConfigDiskError::TooLarge(_))));
    }
}
