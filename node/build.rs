//! Link options of the node's binaries.

fn main() {
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    // Relative relocations packed as DT_RELR (glibc 2.36 and binutils 2.38 on, which
    // Debian 12, the image's base, has): the loader reads and the node maps ~13 kB at
    // every start instead of ~0.9 MB of `.rela.dyn`, a position-independent binary still.
    if target("CARGO_CFG_TARGET_OS") == "linux" && target("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
