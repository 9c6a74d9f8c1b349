//! What the build reads from ELF files: a kernel module's `.modinfo`, a
//! program's interpreter and needed libraries, the kernel's PVH entry note.

use anyhow::{anyhow, Context};
use object::elf::{FileHeader64, DT_NEEDED, PT_INTERP, PT_NOTE};
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSection};

fn parse(data: &[u8]) -> anyhow::Result<&FileHeader64<Endianness>> {
    FileHeader64::<Endianness>::parse(data).map_err(|e| anyhow!("not a 64-bit ELF file: {e}"))
}

/// The `key=value` strings of a module's `.modinfo` section.
pub fn modinfo(data: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
    let file = object::File::parse(data).map_err(|e| anyhow!("not an ELF file: {e}"))?;
    let Some(section) = file.section_by_name(".modinfo") else {
        return Ok(Vec::new());
    };
    let bytes = section.data().map_err(|e| anyhow!("unreadable .modinfo: {e}"))?;
    Ok(bytes
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

/// A program's interpreter (`PT_INTERP`) and its `DT_NEEDED` libraries.
pub struct Linkage {
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
}

pub fn linkage(data: &[u8]) -> anyhow::Result<Linkage> {
    let hdr = parse(data)?;
    let endian = hdr.endian().map_err(|e| anyhow!("{e}"))?;
    let mut interpreter = None;
    for ph in hdr.program_headers(endian, data).map_err(|e| anyhow!("{e}"))? {
        if ph.p_type(endian) == PT_INTERP {
            if let Some(i) = ph.interpreter(endian, data).map_err(|e| anyhow!("{e}"))? {
                interpreter = Some(String::from_utf8_lossy(i).into_owned());
            }
        }
    }
    let sections = hdr.sections(endian, data).map_err(|e| anyhow!("{e}"))?;
    let mut needed = Vec::new();
    if let Some((dynamic, link)) = sections.dynamic(endian, data).map_err(|e| anyhow!("{e}"))? {
        let strings = sections.strings(endian, data, link).map_err(|e| anyhow!("{e}"))?;
        for d in dynamic {
            if d.tag32(endian) == Some(DT_NEEDED) {
                let name = d.string(endian, strings).map_err(|e| anyhow!("{e}")).context("bad DT_NEEDED")?;
                needed.push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Ok(Linkage { interpreter, needed })
}

/// True when the kernel ELF has the Xen PVH entry note
/// (`XEN_ELFNOTE_PHYS32_ENTRY`), which QEMU's `-kernel` needs to boot an
/// uncompressed vmlinux.
pub fn has_pvh_entry(data: &[u8]) -> anyhow::Result<bool> {
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    let hdr = parse(data)?;
    let endian = hdr.endian().map_err(|e| anyhow!("{e}"))?;
    for ph in hdr.program_headers(endian, data).map_err(|e| anyhow!("{e}"))? {
        if ph.p_type(endian) != PT_NOTE {
            continue;
        }
        if let Some(mut notes) = ph.notes(endian, data).map_err(|e| anyhow!("{e}"))? {
            while let Some(note) = notes.next().map_err(|e| anyhow!("{e}"))? {
                if note.name() == b"Xen" && note.n_type(endian) == XEN_ELFNOTE_PHYS32_ENTRY {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}
