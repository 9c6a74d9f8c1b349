//! The kernel: Debian's bzImage for real hardware, and the uncompressed
//! vmlinux inside it for QEMU, which boots it through the PVH entry without
//! the decompression that costs seconds under TCG.

use std::io::Read;

use anyhow::bail;

/// The start of an XZ stream (XZ file format 2.1.1.1).
const XZ_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
/// A decompressed kernel larger than this is not what we are looking for.
const MAX_VMLINUX: u64 = 256 << 20;

/// Finds the XZ-compressed payload in a bzImage and decompresses it.
pub fn vmlinux_from_bzimage(bz: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut tried = 0;
    for start in bz.windows(XZ_MAGIC.len()).enumerate().filter(|(_, w)| *w == XZ_MAGIC).map(|(i, _)| i) {
        tried += 1;
        let mut out = Vec::new();
        let decoder = liblzma::read::XzDecoder::new(&bz[start..]);
        if decoder.take(MAX_VMLINUX).read_to_end(&mut out).is_ok() && out.starts_with(b"\x7fELF") {
            return Ok(out);
        }
    }
    bail!("no XZ-compressed ELF kernel in the bzImage ({tried} XZ headers tried)")
}
