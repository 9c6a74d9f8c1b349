//! Debian packages: fetched with `apt-get download`, checked against a pinned
//! sha256, kept in the cache, and unpacked once.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A pinned package: name, exact version, sha256 of the .deb.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

impl Package {
    fn stem(&self) -> String {
        // Debian versions may hold ':' (epochs), which apt writes as %3a.
        format!("{}_{}", self.name, self.version.replace(':', "%3a"))
    }
}

pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The package's .deb in the cache, downloaded first if missing. A file
/// whose sha256 differs from the pin is never used.
pub fn fetch(pkg: &Package, cache: &Path) -> anyhow::Result<PathBuf> {
    let dir = cache.join("debian");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let deb = dir.join(format!("{}.deb", pkg.stem()));
    if deb.exists() {
        if sha256_file(&deb)? == pkg.sha256 {
            return Ok(deb);
        }
        eprintln!("  {}: cached file has the wrong sha256, fetching again", deb.display());
        fs::remove_file(&deb)?;
    }
    // apt-get download writes into the current directory; use a private one
    // so that a failed or concurrent download leaves nothing half-written.
    let tmp = dir.join(format!("download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    eprintln!("  fetching {} {} (apt-get download)", pkg.name, pkg.version);
    let out = Command::new("apt-get")
        .arg("download")
        .arg(format!("{}={}", pkg.name, pkg.version))
        .current_dir(&tmp)
        .stdin(Stdio::null())
        .output()
        .context("cannot run apt-get (the image build takes packages from Debian)")?;
    let result = (|| {
        if !out.status.success() {
            bail!(
                "apt-get download {}={} failed: {}\n(run `apt-get update` first; if this version has left the archive, \
                 pin the current one: `apt-cache show {}` gives Version and SHA256)",
                pkg.name,
                pkg.version,
                String::from_utf8_lossy(&out.stderr).trim(),
                pkg.name
            );
        }
        let got: Vec<PathBuf> = fs::read_dir(&tmp)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "deb")).collect();
        let [file] = got.as_slice() else { bail!("apt-get download left {} files for {}", got.len(), pkg.name) };
        let sum = sha256_file(file)?;
        if sum != pkg.sha256 {
            bail!("{} {} has sha256 {sum}, but the board pins {}", pkg.name, pkg.version, pkg.sha256);
        }
        fs::rename(file, &deb)?;
        Ok(deb.clone())
    })();
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// Unpacks the data archive of a .deb into `dest` (created; must not exist).
pub fn unpack(deb: &Path, dest: &Path) -> anyhow::Result<()> {
    let f = fs::File::open(deb).with_context(|| format!("cannot open {}", deb.display()))?;
    let mut ar = ar::Archive::new(f);
    while let Some(entry) = ar.next_entry() {
        let entry = entry.with_context(|| format!("{} is not a Debian package", deb.display()))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let reader: Box<dyn Read> = match name.as_str() {
            "data.tar.xz" => Box::new(liblzma::read::XzDecoder::new(entry)),
            "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "data.tar" => Box::new(entry),
            n if n.starts_with("data.tar") => bail!("{}: {n} is compressed in a way this build does not read", deb.display()),
            _ => continue,
        };
        let mut tar = tar::Archive::new(reader);
        tar.set_preserve_permissions(true);
        tar.unpack(dest).with_context(|| format!("cannot unpack {} into {}", deb.display(), dest.display()))?;
        return Ok(());
    }
    bail!("{} has no data.tar", deb.display())
}

/// The package unpacked in the cache (`<cache>/unpacked/<name>_<version>/`),
/// fetching and unpacking it the first time.
pub fn unpacked(pkg: &Package, cache: &Path) -> anyhow::Result<PathBuf> {
    let dest = cache.join("unpacked").join(pkg.stem());
    let stamp = dest.join(".sha256");
    if fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == pkg.sha256) {
        return Ok(dest);
    }
    let deb = fetch(pkg, cache)?;
    let _ = fs::remove_dir_all(&dest);
    let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    if let Err(e) = unpack(&deb, &tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    fs::write(tmp.join(".sha256"), &pkg.sha256)?;
    fs::rename(&tmp, &dest).with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))?;
    Ok(dest)
}
