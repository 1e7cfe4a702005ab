//! Link settings for the controller binary.
//!
//! On glibc 2.36 and later the binary is linked with compact relative relocations
//! (`-z pack-relative-relocs`, DT_RELR). A position-independent Rust binary of this size
//! carries about 2 MB of `R_X86_64_RELATIVE` entries (every vtable, string table and static
//! pointer); the dynamic loader reads them all at start and the pages stay resident for the
//! life of the process, a few percent of the controller's memory (docs/benchmarks.md). RELR
//! packs the same relocations into a bitmap of a few KB. Older glibc cannot load such a
//! binary, so nothing changes there; the image (static musl) is not affected either.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let native = var("HOST") == var("TARGET");
    if var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && native
        && glibc_at_least(2, 36)
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The build host's glibc (`getconf GNU_LIBC_VERSION` prints `glibc 2.36`).
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}
