//! A board's description, `board/<board>/board.toml`: the kernel package,
//! the base command line, and per role the modules, programs and packages.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::debian::Package;

/// The roles a box can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Mail,
    Storage,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Mail, Role::Storage];

    pub fn name(self) -> &'static str {
        match self {
            Role::Mail => "mail",
            Role::Storage => "storage",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mail" => Ok(Role::Mail),
            "storage" => Ok(Role::Storage),
            _ => Err(format!("unknown role '{s}' (mail or storage)")),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    pub package: String,
    pub version: String,
    pub sha256: String,
    /// `uname -r`.
    pub release: String,
    /// The base of every box's kernel command line.
    pub cmdline: String,
}

impl Kernel {
    pub fn package(&self) -> Package {
        Package { name: self.package.clone(), version: self.version.clone(), sha256: self.sha256.clone() }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// Modules by name; dependencies are added by the build.
    #[serde(default)]
    pub modules: Vec<String>,
    /// Absolute paths of programs taken from `packages`.
    #[serde(default)]
    pub programs: Vec<String>,
    /// Library sonames to add although no ELF header names them.
    #[serde(default)]
    pub libraries: Vec<String>,
    #[serde(default)]
    pub packages: Vec<Package>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub dir: PathBuf,
    pub kernel: Kernel,
    #[serde(default)]
    pub role: BTreeMap<String, RoleSpec>,
}

impl Board {
    pub fn load(name: &str) -> anyhow::Result<Board> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            bail!("'{name}' is not a board name");
        }
        let dir = crate::paths::workspace().join("board").join(name);
        let path = dir.join("board.toml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("no board '{name}': cannot read {}", path.display()))?;
        let mut board: Board = toml::from_str(&text).with_context(|| format!("{} is not a valid board description", path.display()))?;
        board.name = name.to_string();
        board.dir = dir;
        Ok(board)
    }

    pub fn role(&self, role: Role) -> anyhow::Result<&RoleSpec> {
        self.role.get(role.name()).with_context(|| format!("board {} has no role {role}", self.name))
    }
}
