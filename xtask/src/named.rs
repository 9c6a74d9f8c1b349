//! The patent's DNS server: BIND 9 (`named`) inside the layout's namespace,
//! primary for the mail domain's zone, which the cluster's failover
//! announcer updates with RFC 2136 UPDATEs signed with a TSIG key.
//!
//! The configuration is made from the templates in `qemu/`
//! (`named.conf.in`, `zone.in`), with `@NAME@` placeholders.

use std::fs;
use std::path::Path;

use anyhow::Context;

use crate::paths;

pub struct NamedConfig<'a> {
    pub dir: &'a Path,
    pub listen: &'a str,
    pub zone: &'a str,
    pub key_name: &'a str,
    pub key_secret: &'a str,
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("@{k}@"), v);
    }
    out
}

/// Writes named.conf and the zone file into `dir`; returns named.conf.
pub fn write_config(c: &NamedConfig) -> anyhow::Result<std::path::PathBuf> {
    let templates = paths::workspace().join("qemu");
    let read = |n: &str| fs::read_to_string(templates.join(n)).with_context(|| format!("cannot read qemu/{n}"));
    let dir = c.dir.to_string_lossy();
    let vars = [("DIR", dir.as_ref()), ("LISTEN", c.listen), ("ZONE", c.zone), ("KEY_NAME", c.key_name), ("KEY_SECRET", c.key_secret)];
    let conf = c.dir.join("named.conf");
    fs::write(&conf, fill(&read("named.conf.in")?, &vars))?;
    fs::write(c.dir.join(format!("{}.zone", c.zone)), fill(&read("zone.in")?, &vars))?;
    Ok(conf)
}
