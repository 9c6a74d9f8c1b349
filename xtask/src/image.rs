//! `cargo xtask image`: one board's kernel + initramfs pair for one role.
//!
//! The kernel and its modules come from Debian's prebuilt kernel package,
//! the programs of the storage box from Debian's packages with their
//! libraries; `/init` is the statically linked `mailfort`. Output:
//! `<target>/image/<board>/<role>/{bzImage,vmlinux,initramfs.cpio.gz,cmdline,manifest.txt}`.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::BufWriter;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::board::{Board, Role, RoleSpec};
use crate::cpio::{Node, Source, Tree};
use crate::{debian, elf, kernel, kmod, paths};

/// The Rust target of the boxes.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The mail box image's size budget (kernel + initramfs): small enough to
/// flash and boot from anything.
pub const MAIL_IMAGE_BUDGET: u64 = 25_000_000;

/// One built image.
#[derive(Debug, Clone)]
pub struct Image {
    pub board: String,
    pub role: Role,
    pub dir: PathBuf,
    pub bzimage: PathBuf,
    pub vmlinux: PathBuf,
    pub initramfs: PathBuf,
    /// The board's base command line.
    pub cmdline: String,
    pub kernel_release: String,
}

impl Image {
    /// The image as a previous build left it, without building.
    pub fn existing(board: &str, role: Role) -> anyhow::Result<Image> {
        let b = Board::load(board)?;
        let dir = paths::image_dir(board, role.name());
        let img = Image::at(&b, role, dir);
        for f in [&img.vmlinux, &img.initramfs] {
            if !f.exists() {
                bail!("{} is missing: run `cargo xtask image --board {board} --role {role}`", f.display());
            }
        }
        Ok(img)
    }

    fn at(b: &Board, role: Role, dir: PathBuf) -> Image {
        Image {
            board: b.name.clone(),
            role,
            bzimage: dir.join("bzImage"),
            vmlinux: dir.join("vmlinux"),
            initramfs: dir.join("initramfs.cpio.gz"),
            cmdline: b.kernel.cmdline.clone(),
            kernel_release: b.kernel.release.clone(),
            dir,
        }
    }
}

/// Builds the static `mailfort` for the boxes into `<target>/image/cargo`
/// (its own target directory: the static RUSTFLAGS would otherwise rebuild
/// the workspace's normal build every time).
pub fn build_mailfort() -> anyhow::Result<PathBuf> {
    let target_dir = paths::target_dir().join("image").join("cargo");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the static mailfort ({TARGET}, crt-static) ...");
    let status = Command::new(cargo)
        .args(["build", "--release", "--package", "mailfort", "--target", TARGET])
        .current_dir(paths::workspace())
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building the static mailfort failed");
    }
    Ok(target_dir.join(TARGET).join("release").join("mailfort"))
}

/// Refuses a `mailfort` that needs a dynamic loader: the image has none.
fn check_static(path: &Path) -> anyhow::Result<()> {
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let l = elf::linkage(&data).with_context(|| path.display().to_string())?;
    if l.interpreter.is_some() || !l.needed.is_empty() {
        bail!("{} is not statically linked (needs {:?} {:?})", path.display(), l.interpreter, l.needed);
    }
    Ok(())
}

/// The kernel release's unpacked package and the vmlinux taken from it.
struct KernelFiles {
    bzimage: PathBuf,
    vmlinux: PathBuf,
    modules: PathBuf,
}

fn kernel_files(b: &Board, cache: &Path) -> anyhow::Result<KernelFiles> {
    let pkg = b.kernel.package();
    let root = debian::unpacked(&pkg, cache)?;
    let bzimage = root.join("boot").join(format!("vmlinuz-{}", b.kernel.release));
    let modules = root.join("lib/modules").join(&b.kernel.release);
    if !bzimage.exists() || !modules.is_dir() {
        bail!("{} {} has no kernel or modules for release {}", pkg.name, pkg.version, b.kernel.release);
    }
    let vmlinux = cache.join("vmlinux").join(format!("{}_{}", pkg.name, pkg.version));
    if !vmlinux.exists() {
        let data = kernel::vmlinux_from_bzimage(&fs::read(&bzimage)?)?;
        if !elf::has_pvh_entry(&data)? {
            bail!("the kernel has no PVH entry note: QEMU cannot boot its vmlinux directly (CONFIG_PVH)");
        }
        fs::create_dir_all(vmlinux.parent().unwrap_or(cache))?;
        let tmp = vmlinux.with_extension("tmp");
        fs::write(&tmp, &data)?;
        fs::rename(&tmp, &vmlinux)?;
    }
    Ok(KernelFiles { bzimage, vmlinux, modules })
}

/// Adds a directory of the source tree (rootfs/common, rootfs/<role>) to
/// the image, keeping each file's executable bit.
fn add_rootfs(tree: &mut Tree, dir: &Path, at: &str) -> anyhow::Result<usize> {
    let mut n = 0;
    if !dir.is_dir() {
        return Ok(0);
    }
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = format!("{at}/{name}");
        let ft = e.file_type()?;
        if ft.is_dir() {
            tree.dir(&path);
            n += add_rootfs(tree, &e.path(), &path)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(e.path())?.to_string_lossy().into_owned();
            tree.insert(&path, Node::Symlink { target });
            n += 1;
        } else {
            let exec = e.metadata()?.permissions().mode() & 0o111 != 0;
            tree.insert(&path, Node::File { mode: if exec { 0o755 } else { 0o644 }, source: Source::Path(e.path()) });
            n += 1;
        }
    }
    Ok(n)
}

/// Programs from Debian packages and every library they load.
fn add_programs(tree: &mut Tree, spec: &RoleSpec, cache: &Path) -> anyhow::Result<Vec<String>> {
    if spec.programs.is_empty() && spec.libraries.is_empty() {
        return Ok(Vec::new());
    }
    let roots: Vec<PathBuf> = spec.packages.iter().map(|p| debian::unpacked(p, cache)).collect::<anyhow::Result<_>>()?;
    let mut sys = Sysroot { roots, added: HashSet::new(), files: Vec::new() };
    for p in &spec.programs {
        sys.add(tree, p).with_context(|| format!("program {p}"))?;
    }
    for l in &spec.libraries {
        let path = sys.find_library(l).with_context(|| format!("library {l} is in none of the role's packages"))?;
        sys.add(tree, &path)?;
    }
    Ok(sys.files)
}

/// The role's packages unpacked side by side, searched like one root.
struct Sysroot {
    roots: Vec<PathBuf>,
    added: HashSet<String>,
    files: Vec<String>,
}

/// Where the dynamic loader looks without an ld.so.cache (Debian's
/// multiarch directories first).
const LIBRARY_DIRS: [&str; 4] = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"];

impl Sysroot {
    fn lookup(&self, path: &str) -> Option<(PathBuf, fs::Metadata)> {
        self.roots.iter().find_map(|r| {
            let p = r.join(path.trim_start_matches('/'));
            fs::symlink_metadata(&p).ok().map(|m| (p, m))
        })
    }

    fn find_library(&self, soname: &str) -> Option<String> {
        LIBRARY_DIRS.iter().map(|d| format!("{d}/{soname}")).find(|p| self.lookup(p).is_some())
    }

    fn add(&mut self, tree: &mut Tree, path: &str) -> anyhow::Result<()> {
        if !self.added.insert(path.to_string()) {
            return Ok(());
        }
        let Some((host, meta)) = self.lookup(path) else {
            bail!("{path} is in none of the role's packages");
        };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&host)?.to_string_lossy().into_owned();
            tree.insert(path, Node::Symlink { target: target.clone() });
            let resolved = if target.starts_with('/') {
                target
            } else {
                let parent = Path::new(path).parent().unwrap_or(Path::new("/"));
                normalize_path(&parent.join(&target))
            };
            return self.add(tree, &resolved);
        }
        let data = fs::read(&host)?;
        let mode = meta.permissions().mode() & 0o7777;
        tree.insert(path, Node::File { mode, source: Source::Path(host.clone()) });
        self.files.push(path.to_string());
        if data.starts_with(b"\x7fELF") {
            let l = elf::linkage(&data).with_context(|| host.display().to_string())?;
            if let Some(i) = l.interpreter {
                self.add(tree, &i)?;
            }
            for n in l.needed {
                let lib = self.find_library(&n).with_context(|| format!("{path} needs {n}, which is in none of the role's packages"))?;
                self.add(tree, &lib)?;
            }
        }
        Ok(())
    }
}

/// "/a/b/../c" -> "/a/c", without touching the file system.
fn normalize_path(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// Options of one build.
pub struct BuildOptions {
    pub board: String,
    pub roles: Vec<Role>,
    /// A prebuilt static mailfort to use instead of building one.
    pub mailfort: Option<PathBuf>,
}

/// Builds the images of the given roles; prints what went in and the sizes.
pub fn build(opts: &BuildOptions) -> anyhow::Result<Vec<Image>> {
    let board = Board::load(&opts.board)?;
    let cache = paths::cache_dir();
    let started = Instant::now();
    let mailfort = match &opts.mailfort {
        Some(p) => p.clone(),
        None => build_mailfort()?,
    };
    check_static(&mailfort)?;
    eprintln!("kernel {} ({} {}) ...", board.kernel.release, board.kernel.package, board.kernel.version);
    let k = kernel_files(&board, &cache)?;
    let mut modtree = kmod::ModuleTree::open(&k.modules)?;
    let version = env!("CARGO_PKG_VERSION");
    // Reproducible: the same inputs give the same archive.
    let mtime: u32 = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut images = Vec::new();
    for &role in &opts.roles {
        let spec = board.role(role)?;
        let dir = paths::image_dir(&board.name, role.name());
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let img = Image::at(&board, role, dir.clone());

        let mut tree = Tree::default();
        for d in ["/proc", "/sys", "/dev", "/run", "/mnt"] {
            tree.dir(d);
        }
        tree.insert("/tmp", Node::Dir { mode: 0o1777 });
        tree.insert("/dev/console", Node::CharDev { mode: 0o600, major: 5, minor: 1 });
        tree.insert("/dev/null", Node::CharDev { mode: 0o666, major: 1, minor: 3 });
        tree.insert("/init", Node::File { mode: 0o755, source: Source::Path(mailfort.clone()) });
        tree.insert("/bin/mailfort", Node::Symlink { target: "../init".into() });
        let rootfs = paths::workspace().join("rootfs");
        let n_rootfs = add_rootfs(&mut tree, &rootfs.join("common"), "")? + add_rootfs(&mut tree, &rootfs.join(role.name()), "")?;
        tree.insert(
            "/etc/mailfort/image",
            Node::File {
                mode: 0o644,
                source: Source::Bytes(format!("role={role}\nboard={}\nkernel={}\nversion={version}\n", board.name, board.kernel.release).into_bytes()),
            },
        );

        let res = modtree.resolve(&spec.modules)?;
        let moddir = format!("/lib/modules/{}", board.kernel.release);
        for m in &res.modules {
            tree.insert(&format!("{moddir}/{}", m.rel.display()), Node::File { mode: 0o644, source: Source::Path(k.modules.join(&m.rel)) });
        }
        tree.insert(&format!("{moddir}/modules.load"), Node::File { mode: 0o644, source: Source::Bytes(res.load_list().into_bytes()) });
        tree.insert(&format!("{moddir}/modules.dep"), Node::File { mode: 0o644, source: Source::Bytes(res.modules_dep().into_bytes()) });
        tree.insert(&format!("{moddir}/modules.softdep"), Node::File { mode: 0o644, source: Source::Bytes(res.modules_softdep().into_bytes()) });
        tree.insert(&format!("{moddir}/modules.alias"), Node::File { mode: 0o644, source: Source::Bytes(res.modules_alias().into_bytes()) });
        tree.insert(&format!("{moddir}/modules.builtin"), Node::File { mode: 0o644, source: Source::Path(k.modules.join("modules.builtin")) });
        let programs = add_programs(&mut tree, spec, &cache)?;

        // The archive, then gzip -9 (the kernel's CONFIG_RD_GZIP).
        let tmp = img.initramfs.with_extension("tmp");
        let out = BufWriter::new(fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?);
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::best());
        let unpacked = tree.write(&mut gz, mtime)?;
        gz.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&tmp, &img.initramfs)?;
        copy_if_changed(&k.bzimage, &img.bzimage)?;
        copy_if_changed(&k.vmlinux, &img.vmlinux)?;
        fs::write(dir.join("cmdline"), format!("{}\n", board.kernel.cmdline))?;
        fs::write(dir.join("manifest.txt"), manifest(&tree))?;

        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let (bz, vm, ird) = (size(&img.bzimage), size(&img.vmlinux), size(&img.initramfs));
        println!("image {}/{role} in {}", board.name, dir.display());
        println!("  bzImage            {:>7}  (real hardware, UEFI)", mb(bz));
        println!("  vmlinux            {:>7}  (QEMU: PVH entry, no decompression)", mb(vm));
        println!("  initramfs.cpio.gz  {:>7}  ({} unpacked; /init {}; {} modules; {} rootfs files{})", mb(ird), mb(unpacked), mb(size(&mailfort)), res.modules.len(), n_rootfs,
            if programs.is_empty() { String::new() } else { format!("; {} program files", programs.len()) });
        let total = bz + ird;
        let budget = if role == Role::Mail { format!(" (budget {})", mb(MAIL_IMAGE_BUDGET)) } else { String::new() };
        println!("  kernel + initramfs {:>7}{budget}", mb(total));
        if !res.builtin.is_empty() {
            println!("  built into the kernel: {}", res.builtin.iter().cloned().collect::<Vec<_>>().join(" "));
        }
        if !res.missing_softdeps.is_empty() {
            println!("  soft dependencies nothing provides (skipped, as modprobe does): {}", res.missing_softdeps.iter().cloned().collect::<Vec<_>>().join(" "));
        }
        if role == Role::Mail && total > MAIL_IMAGE_BUDGET {
            bail!("the mail image is {} (kernel + initramfs), over its budget of {}", mb(total), mb(MAIL_IMAGE_BUDGET));
        }
        images.push(img);
    }
    eprintln!("images built in {:.1} s", started.elapsed().as_secs_f64());
    Ok(images)
}

fn copy_if_changed(from: &Path, to: &Path) -> anyhow::Result<()> {
    let same = match (fs::metadata(from), fs::metadata(to)) {
        (Ok(a), Ok(b)) => a.len() == b.len() && fs::read(from)? == fs::read(to)?,
        _ => false,
    };
    if !same {
        let tmp = to.with_extension("tmp");
        fs::copy(from, &tmp).with_context(|| format!("cannot copy {} to {}", from.display(), tmp.display()))?;
        fs::rename(&tmp, to)?;
    }
    Ok(())
}

fn manifest(tree: &Tree) -> String {
    let mut out = String::new();
    let mut seen = BTreeSet::new();
    for (path, node) in tree.iter() {
        seen.insert(path.clone());
        let line = match node {
            Node::Dir { mode } => format!("d {mode:04o} {path}\n"),
            Node::File { mode, source } => {
                let len = match source {
                    Source::Path(p) => fs::metadata(p).map(|m| m.len()).unwrap_or(0),
                    Source::Bytes(b) => b.len() as u64,
                };
                format!("f {mode:04o} {path} {len}\n")
            }
            Node::Symlink { target } => format!("l 0777 {path} -> {target}\n"),
            Node::CharDev { mode, major, minor } => format!("c {mode:04o} {path} {major}:{minor}\n"),
        };
        out.push_str(&line);
    }
    out
}

/// Sizes in MB (10^6 bytes), as the budget is stated.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_resolve_lexically() {
        assert_eq!(normalize_path(Path::new("/usr/lib/x86_64-linux-gnu/../../lib/x")), "/usr/lib/x");
        assert_eq!(normalize_path(Path::new("/lib64/./ld.so")), "/lib64/ld.so");
    }
}
