//! The modules a role needs, with everything they depend on, in load order.
//!
//! Debian's kernel package carries no modules.dep (its postinst runs depmod),
//! so the build reads each module's `.modinfo` itself: `depends=` (hard
//! dependencies) and `softdep=` (`pre:`/`post:` names, often aliases such as
//! `crypto-crc32c`, which btrfs needs before libcrc32c works).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::elf;

/// modinfo and modprobe treat `-` and `_` in module names as the same.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// What the build needs from one module's `.modinfo`.
#[derive(Clone, Debug, Default)]
pub struct ModInfo {
    pub depends: Vec<String>,
    pub pre: Vec<String>,
    pub post: Vec<String>,
    pub aliases: Vec<String>,
    /// The `softdep=` values as written, for modules.softdep.
    pub softdeps: Vec<String>,
}

impl ModInfo {
    pub fn parse(fields: &[(String, String)]) -> ModInfo {
        let mut info = ModInfo::default();
        for (k, v) in fields {
            match k.as_str() {
                "depends" => info.depends.extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_string)),
                "alias" => info.aliases.push(v.clone()),
                "softdep" => {
                    info.softdeps.push(v.clone());
                    // "pre: a b post: c" (modprobe.d(5)).
                    let mut list: Option<&mut Vec<String>> = None;
                    for word in v.split_whitespace() {
                        match word {
                            "pre:" => list = Some(&mut info.pre),
                            "post:" => list = Some(&mut info.post),
                            w => {
                                if let Some(l) = list.as_deref_mut() {
                                    l.push(w.to_string());
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        info
    }
}

/// A module chosen for the image.
#[derive(Clone, Debug)]
pub struct Module {
    pub name: String,
    /// Path relative to `/lib/modules/<release>/`.
    pub rel: PathBuf,
    pub info: ModInfo,
}

/// The modules of one kernel release: `lib/modules/<release>/` unpacked.
pub struct ModuleTree {
    root: PathBuf,
    by_name: HashMap<String, PathBuf>,
    builtin: HashSet<String>,
    builtin_aliases: HashSet<String>,
    infos: HashMap<String, ModInfo>,
    /// alias -> modules, read from every module the first time an alias is
    /// looked up.
    aliases: Option<HashMap<String, Vec<String>>>,
}

impl ModuleTree {
    pub fn open(root: &Path) -> anyhow::Result<ModuleTree> {
        let mut by_name = HashMap::new();
        let mut stack = vec![root.join("kernel")];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
                let e = e?;
                let p = e.path();
                if e.file_type()?.is_dir() {
                    stack.push(p);
                } else if let Some(stem) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko")) {
                    let rel = p.strip_prefix(root)?.to_path_buf();
                    by_name.insert(normalize(stem), rel);
                }
            }
        }
        let builtin_list = fs::read_to_string(root.join("modules.builtin")).context("the kernel has no modules.builtin")?;
        let builtin = builtin_list
            .lines()
            .filter_map(|l| Path::new(l).file_name()?.to_str()?.strip_suffix(".ko").map(normalize))
            .collect();
        // modules.builtin.modinfo: "module.key=value" strings, NUL-separated.
        let modinfo = fs::read(root.join("modules.builtin.modinfo")).unwrap_or_default();
        let builtin_aliases = modinfo
            .split(|b| *b == 0)
            .filter_map(|s| std::str::from_utf8(s).ok())
            .filter_map(|s| s.split_once(".alias=").map(|(_, a)| a.to_string()))
            .collect();
        Ok(ModuleTree { root: root.to_path_buf(), by_name, builtin, builtin_aliases, infos: HashMap::new(), aliases: None })
    }

    pub fn is_module(&self, name: &str) -> bool {
        self.by_name.contains_key(&normalize(name))
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    fn info(&mut self, name: &str) -> anyhow::Result<ModInfo> {
        if let Some(i) = self.infos.get(name) {
            return Ok(i.clone());
        }
        let rel = self.by_name.get(name).with_context(|| format!("no module {name}"))?;
        let path = self.root.join(rel);
        let data = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let info = ModInfo::parse(&elf::modinfo(&data).with_context(|| path.display().to_string())?);
        self.infos.insert(name.to_string(), info.clone());
        Ok(info)
    }

    /// The modules that provide an alias (not built in).
    fn providers(&mut self, alias: &str) -> anyhow::Result<Vec<String>> {
        if self.aliases.is_none() {
            let mut map: HashMap<String, Vec<String>> = HashMap::new();
            let mut names: Vec<String> = self.by_name.keys().cloned().collect();
            names.sort();
            for n in names {
                for a in self.info(&n)?.aliases {
                    map.entry(a).or_default().push(n.clone());
                }
            }
            self.aliases = Some(map);
        }
        Ok(self.aliases.as_ref().and_then(|m| m.get(alias)).cloned().unwrap_or_default())
    }

    /// Every module that `wanted` needs, dependencies before the modules that
    /// need them; also returns the wanted names that are built in.
    pub fn resolve(&mut self, wanted: &[String]) -> anyhow::Result<Resolution> {
        let mut r = Resolution::default();
        let mut state = Walk { done: HashSet::new(), active: HashSet::new() };
        for w in wanted {
            let n = normalize(w);
            if self.by_name.contains_key(&n) {
                self.visit(&n, &mut state, &mut r)?;
            } else if self.is_builtin(&n) {
                r.builtin.insert(w.clone());
            } else {
                bail!("the kernel has no module {w} (neither a module file nor built in)");
            }
        }
        Ok(r)
    }

    fn soft(&mut self, names: &[String], state: &mut Walk, r: &mut Resolution) -> anyhow::Result<()> {
        for s in names {
            let n = normalize(s);
            if self.by_name.contains_key(&n) {
                self.visit(&n, state, r)?;
            } else if self.is_builtin(&n) || self.builtin_aliases.contains(s) {
                r.builtin.insert(s.clone());
            } else {
                let providers = self.providers(s)?;
                if providers.is_empty() {
                    // modprobe ignores a soft dependency it cannot find too.
                    r.missing_softdeps.insert(s.clone());
                }
                for p in providers {
                    self.visit(&p, state, r)?;
                }
            }
        }
        Ok(())
    }

    fn visit(&mut self, name: &str, state: &mut Walk, r: &mut Resolution) -> anyhow::Result<()> {
        if state.done.contains(name) || !state.active.insert(name.to_string()) {
            return Ok(());
        }
        let info = self.info(name)?;
        self.soft(&info.pre, state, r)?;
        for d in &info.depends {
            let d = normalize(d);
            if !self.by_name.contains_key(&d) {
                bail!("module {name} depends on {d}, which this kernel does not have as a module");
            }
            self.visit(&d, state, r)?;
        }
        state.active.remove(name);
        state.done.insert(name.to_string());
        let rel = self.by_name[name].clone();
        r.modules.push(Module { name: name.to_string(), rel, info: info.clone() });
        self.soft(&info.post, state, r)
    }
}

struct Walk {
    done: HashSet<String>,
    active: HashSet<String>,
}

#[derive(Debug, Default)]
pub struct Resolution {
    /// In load order.
    pub modules: Vec<Module>,
    /// Wanted names and soft dependencies that the kernel has built in.
    pub builtin: BTreeSet<String>,
    /// Soft dependencies nothing provides (modprobe skips them too).
    pub missing_softdeps: BTreeSet<String>,
}

impl Resolution {
    /// modules.load: one path a line, in load order.
    pub fn load_list(&self) -> String {
        self.modules.iter().map(|m| format!("{}\n", m.rel.display())).collect()
    }

    /// modules.dep in depmod's format, for the modules in the image: each
    /// module with all its hard dependencies, nearest first.
    pub fn modules_dep(&self) -> String {
        let by_name: BTreeMap<&str, &Module> = self.modules.iter().map(|m| (m.name.as_str(), m)).collect();
        let mut out = String::new();
        for m in &self.modules {
            let mut deps: Vec<&Module> = Vec::new();
            let mut queue: Vec<&str> = m.info.depends.iter().map(|d| d.as_str()).collect();
            let mut seen = HashSet::new();
            while !queue.is_empty() {
                let d = normalize(queue.remove(0));
                if let Some(dm) = by_name.get(d.as_str()) {
                    if seen.insert(dm.name.clone()) {
                        deps.push(dm);
                        queue.extend(dm.info.depends.iter().map(|s| s.as_str()));
                    }
                }
            }
            out.push_str(&format!("{}:", m.rel.display()));
            for d in deps {
                out.push_str(&format!(" {}", d.rel.display()));
            }
            out.push('\n');
        }
        out
    }

    /// modules.alias: `alias <alias> <module>` for the modules in the image
    /// (what a soft dependency may name).
    pub fn modules_alias(&self) -> String {
        let mut out = String::new();
        for m in &self.modules {
            for a in &m.info.aliases {
                out.push_str(&format!("alias {a} {}\n", m.name));
            }
        }
        out
    }

    /// modules.softdep: `softdep <module> pre: ... post: ...` lines.
    pub fn modules_softdep(&self) -> String {
        let mut out = String::new();
        for m in &self.modules {
            for s in &m.info.softdeps {
                out.push_str(&format!("softdep {} {}\n", m.name, s));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softdep_lists() {
        let i = ModInfo::parse(&[
            ("softdep".into(), "pre: crypto-crc32c".into()),
            ("softdep".into(), "pre: a b post: c".into()),
            ("depends".into(), "zstd_compress,raid6_pq".into()),
            ("depends".into(), "".into()),
        ]);
        assert_eq!(i.pre, ["crypto-crc32c", "a", "b"]);
        assert_eq!(i.post, ["c"]);
        assert_eq!(i.depends, ["zstd_compress", "raid6_pq"]);
    }
}
