//! An initramfs archive: cpio in the "newc" format the kernel unpacks
//! (Documentation/driver-api/early-userspace/buffer-format.rst), built from
//! a tree held in memory so that device nodes and ownership need no root.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

/// What one path in the image is.
#[derive(Clone, Debug)]
pub enum Node {
    Dir { mode: u32 },
    /// Contents from a file on the build host, or given.
    File { mode: u32, source: Source },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

#[derive(Clone, Debug)]
pub enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

impl Source {
    pub fn read(&self) -> io::Result<Vec<u8>> {
        match self {
            Source::Path(p) => std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
            Source::Bytes(b) => Ok(b.clone()),
        }
    }
}

/// The image's tree: absolute paths ("/etc/hosts") to nodes. Parents are
/// added as directories; entries are written sorted, parents first.
#[derive(Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = format!("/{}", path.trim_matches('/'));
        let mut parent = String::new();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            parent.push('/');
            parent.push_str(part);
            self.nodes.entry(parent.clone()).or_insert(Node::Dir { mode: 0o755 });
        }
        self.nodes.insert(path, node);
    }

    pub fn dir(&mut self, path: &str) {
        self.insert(path, Node::Dir { mode: 0o755 });
    }

    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(&format!("/{}", path.trim_matches('/')))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    /// Writes the archive; returns the bytes written (before compression).
    pub fn write<W: Write>(&self, w: W, mtime: u32) -> io::Result<u64> {
        let mut c = Writer { w, ino: 1, written: 0, mtime };
        for (path, node) in &self.nodes {
            let name = path.trim_start_matches('/');
            match node {
                Node::Dir { mode } => c.entry(name, 0o040000 | mode, 2, &[], (0, 0))?,
                Node::File { mode, source } => c.entry(name, 0o100000 | mode, 1, &source.read()?, (0, 0))?,
                Node::Symlink { target } => c.entry(name, 0o120777, 1, target.as_bytes(), (0, 0))?,
                Node::CharDev { mode, major, minor } => c.entry(name, 0o020000 | mode, 1, &[], (*major, *minor))?,
            }
        }
        c.entry("TRAILER!!!", 0, 1, &[], (0, 0))?;
        c.w.flush()?;
        Ok(c.written)
    }
}

struct Writer<W: Write> {
    w: W,
    ino: u32,
    written: u64,
    mtime: u32,
}

impl<W: Write> Writer<W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8], rdev: (u32, u32)) -> io::Result<()> {
        let ino = if name == "TRAILER!!!" { 0 } else { self.ino };
        self.ino += 1;
        let fields = [ino, mode, 0, 0, nlink, self.mtime, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut t = Tree::default();
        t.insert("/etc/hosts", Node::File { mode: 0o644, source: Source::Bytes(b"x\n".to_vec()) });
        let mut out = Vec::new();
        t.write(&mut out, 0).unwrap();
        // "etc", then "etc/hosts", then the trailer; every header 4-aligned.
        assert!(out.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&out);
        let etc = text.find("etc\0").unwrap();
        let hosts = text.find("etc/hosts\0").unwrap();
        assert!(etc < hosts && hosts < text.find("TRAILER!!!").unwrap());
        assert_eq!(out.len() % 4, 0);
        assert_eq!(&text[110..113], "etc"); // 6 + 13 * 8 = 110 bytes of header
    }
}
