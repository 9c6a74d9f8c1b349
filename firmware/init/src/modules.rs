//! Kernel modules: which files to load, in which order, and loading them
//! with finit_module(2) (no modprobe on the box).
//!
//! The order comes from the files depmod writes beside the modules:
//! - `modules.dep`: `path: dep-path dep-path ...`, every module a module
//!   needs (modprobe loads them first);
//! - `modules.softdep`: `softdep NAME pre: A B post: C`, modules that are
//!   needed but not linked (btrfs needs `crc32c` before `libcrc32c`);
//!   softdeps name aliases, so
//! - `modules.alias`: `alias NAME MODULE` resolves them;
//! - `modules.builtin`: modules compiled into the kernel (nothing to load).
//!
//! Module names treat '-' and '_' alike (kmod's rule).

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::ModuleInitFlags;

/// A dependency chain longer than this is a cycle or a corrupt modules.dep.
const MAX_DEPTH: usize = 64;

/// The modules each role needs, beyond what the kernel has built in; their
/// dependencies are found in modules.dep.
pub fn role_modules(role: crate::settings::Role) -> &'static [&'static str] {
    use crate::settings::Role;
    match role {
        Role::Mail => &["nfsv4"],
        Role::Storage => &["btrfs", "nfsd"],
    }
}

/// What every box loads first: the disks and the network card (virtio under
/// QEMU), and the power button with the event interface init watches for
/// an ACPI power-off request.
pub const BASE_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "virtio_net", "button", "evdev"];

/// Canonical module name: file stem without `.ko[.xz|.zst|.gz]`, '-' as '_'.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

#[derive(Debug, Default)]
pub struct ModuleIndex {
    /// name -> (path relative to the modules directory, direct deps).
    deps: HashMap<String, (String, Vec<String>)>,
    /// name -> softdep "pre" names (aliases or module names).
    pre: HashMap<String, Vec<String>>,
    /// alias -> module names.
    aliases: HashMap<String, Vec<String>>,
    builtin: HashSet<String>,
}

/// One module to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    /// Relative to the modules directory.
    pub path: String,
    /// Soft dependencies may be missing from the image without harm.
    pub optional: bool,
}

/// The load order for a set of wanted modules.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Wanted modules the kernel has built in.
    pub builtin: Vec<String>,
    /// Wanted (hard) modules that are nowhere.
    pub missing: Vec<String>,
}

impl ModuleIndex {
    /// Builds the index from the text of depmod's files (any may be empty).
    pub fn parse(dep: &str, softdep: &str, alias: &str, builtin: &str) -> ModuleIndex {
        let mut ix = ModuleIndex::default();
        for line in dep.lines() {
            let Some((path, rest)) = line.split_once(':') else { continue };
            let path = path.trim();
            let deps = rest.split_whitespace().map(module_name).collect();
            ix.deps.insert(module_name(path), (path.to_string(), deps));
        }
        for line in softdep.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(name) = w.next() else { continue };
            let mut in_pre = false;
            for t in w {
                match t {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    t if in_pre => ix.pre.entry(module_name(name)).or_default().push(t.to_string()),
                    _ => {}
                }
            }
        }
        for line in alias.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(a), Some(m)) = (w.next(), w.next(), w.next()) {
                // Device aliases with wildcards (`pci:v...*`) are for
                // hotplug; we only resolve plain names.
                if !a.contains(['*', '?', '[']) {
                    ix.aliases.entry(a.to_string()).or_default().push(module_name(m));
                }
            }
        }
        for line in builtin.lines() {
            let l = line.trim();
            if !l.is_empty() {
                ix.builtin.insert(module_name(l));
            }
        }
        ix
    }

    /// Reads the index from `dir` (`/lib/modules/<release>`).
    pub fn read(dir: &Path) -> io::Result<ModuleIndex> {
        let f = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
        let dep = std::fs::read_to_string(dir.join("modules.dep"))?;
        Ok(ModuleIndex::parse(&dep, &f("modules.softdep"), &f("modules.alias"), &f("modules.builtin")))
    }

    /// Module names a softdep or wanted name stands for.
    fn resolve(&self, name: &str) -> Vec<String> {
        let n = module_name(name);
        if self.deps.contains_key(&n) || self.builtin.contains(&n) {
            return vec![n];
        }
        self.aliases.get(name).cloned().unwrap_or_default()
    }

    /// Every module to load for `wanted`, dependencies first, each once.
    pub fn plan(&self, wanted: &[&str]) -> Plan {
        let mut plan = Plan::default();
        let mut seen = HashSet::new();
        for w in wanted {
            let names = self.resolve(w);
            if names.is_empty() {
                plan.missing.push(w.to_string());
            }
            for n in names {
                if self.builtin.contains(&n) && !self.deps.contains_key(&n) {
                    plan.builtin.push(n);
                } else {
                    self.visit(&n, false, 0, &mut seen, &mut plan);
                }
            }
        }
        plan
    }

    fn visit(&self, name: &str, optional: bool, depth: usize, seen: &mut HashSet<String>, plan: &mut Plan) {
        if depth > MAX_DEPTH || !seen.insert(name.to_string()) {
            return;
        }
        let Some((path, deps)) = self.deps.get(name) else {
            if !optional && !self.builtin.contains(name) {
                plan.missing.push(name.to_string());
            }
            return;
        };
        for soft in self.pre.get(name).into_iter().flatten() {
            for m in self.resolve(soft) {
                self.visit(&m, true, depth + 1, seen, plan);
            }
        }
        for d in deps {
            self.visit(d, optional, depth + 1, seen, plan);
        }
        plan.steps.push(Step { name: name.to_string(), path: path.clone(), optional });
    }
}

/// finit_module(2) flag: the file is compressed and the kernel should
/// decompress it (Linux 6.4+ with CONFIG_MODULE_DECOMPRESS).
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// Loads one module file with its parameter string (`nfs4_unique_id=x`).
/// A module that is already loaded counts as loaded.
pub fn load(path: &Path, params: &str) -> io::Result<()> {
    let f = File::open(path)?;
    let p = CString::new(params).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let compressed = path.extension().is_some_and(|e| e != "ko");
    let flags = if compressed { ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE) } else { ModuleInitFlags::empty() };
    match nix::kmod::finit_module(&f, &p, flags) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `modules.load` as the image builder writes it: one module path a line,
/// relative to the modules directory, already in load order (dependencies
/// and pre-softdeps first). Blank lines and `#` comments are skipped.
pub fn parse_load_list(text: &str) -> Vec<Step> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(|l| Step { name: module_name(l), path: l.to_string(), optional: false }).collect()
}

/// Whether a module that failed to load with this error can be skipped:
/// ENODEV (a driver for hardware or a CPU feature that is not there, such
/// as crc32c-intel) or EEXIST (already there).
pub fn skippable(e: &io::Error) -> bool {
    matches!(e.raw_os_error().map(Errno::from_raw), Some(Errno::ENODEV | Errno::EEXIST))
}

/// Sets a parameter of a loaded (or built-in) module through
/// /sys/module/<m>/parameters/<p>, for modules init loaded before it knew
/// the value.
pub fn set_param(module: &str, param: &str, value: &str) -> io::Result<()> {
    std::fs::write(Path::new("/sys/module").join(module).join("parameters").join(param), value)
}

/// Where the running kernel's modules are.
pub fn modules_dir() -> PathBuf {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Path::new("/lib/modules").join(release.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/nfs/nfs.ko: kernel/fs/lockd/lockd.ko kernel/fs/nfs_common/grace.ko kernel/net/sunrpc/sunrpc.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/fs/nfs/nfsv4.ko: kernel/net/dns_resolver/dns_resolver.ko kernel/fs/nfs/nfs.ko kernel/fs/lockd/lockd.ko kernel/fs/nfs_common/grace.ko kernel/net/sunrpc/sunrpc.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/fs/lockd/lockd.ko: kernel/fs/nfs_common/grace.ko kernel/net/sunrpc/sunrpc.ko
kernel/fs/nfs_common/grace.ko:
kernel/net/sunrpc/sunrpc.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/net/dns_resolver/dns_resolver.ko:
kernel/fs/btrfs/btrfs.ko: kernel/crypto/xor.ko kernel/lib/raid6/raid6_pq.ko kernel/lib/zstd/zstd_compress.ko kernel/lib/libcrc32c.ko
kernel/crypto/xor.ko:
kernel/lib/raid6/raid6_pq.ko:
kernel/lib/zstd/zstd_compress.ko:
kernel/lib/libcrc32c.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/crypto/blake2b_generic.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
";
    const SOFT: &str = "\
# comment
softdep btrfs pre: blake2b-256
softdep btrfs pre: sha256
softdep btrfs pre: crypto-crc32c
softdep libcrc32c pre: crc32c
";
    const ALIAS: &str = "\
alias crypto-crc32c crc32c_intel
alias crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
alias blake2b-256 blake2b_generic
alias sha256 sha256_ssse3
alias pci:v00001AF4d00001001sv*sd*bc*sc*i* virtio_blk
";
    const BUILTIN: &str = "kernel/crypto/sha256_generic.ko\nkernel/net/unix/unix.ko\n";

    fn pos(p: &Plan, n: &str) -> usize {
        p.steps.iter().position(|s| s.name == n).unwrap_or_else(|| panic!("{n} not in plan {p:?}"))
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let ix = ModuleIndex::parse(DEP, SOFT, ALIAS, BUILTIN);
        let p = ix.plan(&["nfsv4", "virtio_blk", "nfs"]);
        assert!(p.missing.is_empty(), "{p:?}");
        for (before, after) in [("sunrpc", "lockd"), ("grace", "lockd"), ("lockd", "nfs"), ("netfs", "fscache"), ("fscache", "nfs"), ("nfs", "nfsv4"), ("dns_resolver", "nfsv4"), ("virtio", "virtio_blk")] {
            assert!(pos(&p, before) < pos(&p, after), "{before} must load before {after}");
        }
        let mut names: Vec<_> = p.steps.iter().map(|s| s.name.clone()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "a module planned twice");
    }

    #[test]
    fn softdeps_resolve_aliases_and_come_first() {
        let ix = ModuleIndex::parse(DEP, SOFT, ALIAS, BUILTIN);
        let p = ix.plan(&["btrfs"]);
        assert!(pos(&p, "crc32c_generic") < pos(&p, "libcrc32c"));
        assert!(pos(&p, "crc32c_intel") < pos(&p, "libcrc32c"));
        assert!(pos(&p, "blake2b_generic") < pos(&p, "btrfs"));
        assert!(pos(&p, "libcrc32c") < pos(&p, "btrfs"));
        assert!(p.steps.iter().find(|s| s.name == "crc32c_generic").unwrap().optional);
        assert!(!p.steps.iter().find(|s| s.name == "btrfs").unwrap().optional);
        // sha256 resolves to a module that is not in the image: optional,
        // so not reported missing.
        assert!(p.missing.is_empty(), "{p:?}");
    }

    #[test]
    fn builtin_and_missing() {
        let ix = ModuleIndex::parse(DEP, SOFT, ALIAS, BUILTIN);
        let p = ix.plan(&["unix", "nosuchmodule", "crc32c-intel"]);
        assert_eq!(p.builtin, vec!["unix"]);
        assert_eq!(p.missing, vec!["nosuchmodule"]);
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].path, "kernel/arch/x86/crypto/crc32c-intel.ko");
    }

    #[test]
    fn cycles_end() {
        let ix = ModuleIndex::parse("a.ko: b.ko\nb.ko: a.ko\n", "", "", "");
        let p = ix.plan(&["a"]);
        assert_eq!(p.steps.len(), 2);
    }

    #[test]
    fn load_list() {
        let l = parse_load_list("# built by the image builder\nkernel/net/sunrpc/sunrpc.ko\n\n kernel/arch/x86/crypto/crc32c-intel.ko \n");
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].name, "crc32c_intel");
        assert_eq!(l[1].path, "kernel/arch/x86/crypto/crc32c-intel.ko");
        assert!(skippable(&io::Error::from(Errno::ENODEV)));
        assert!(!skippable(&io::Error::from(Errno::ENOEXEC)));
    }

    #[test]
    fn names() {
        assert_eq!(module_name("kernel/arch/x86/crypto/crc32c-intel.ko.xz"), "crc32c_intel");
        assert_eq!(module_name("btrfs.ko"), "btrfs");
        assert_eq!(module_name("nfsv4"), "nfsv4");
    }
}
